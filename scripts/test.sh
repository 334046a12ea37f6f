#!/usr/bin/env bash
# Runs Tributary's whole test suite on a fresh Debian machine with Go,
# installing what the tests need when it is missing: simulators for the
# hardware keys (SoftHSM2, swtpm), Node.js for the Streamr SDK cross-check,
# mosquitto clients, systemd-analyze for the unit checks, protoc for the
# check that the generated protobuf code is fresh (streamr/pb), solc-js for
# the test StreamRegistry contract and geth for the chain its tests run,
# Chromium for the browser tests (app interfaces, status page), and (through
# scripts/build.sh) Debian's C cross compilers and qemu-user for the builds.
#
# Every test that needs one of these fails (instead of skipping) here,
# because TRIBUTARY_REQUIRE_TOOLS and TRIBUTARY_REQUIRE_NODE are set.
# Long soak and load runs are separate: see the README ("Long runs"). Screenshots
# and other CI artifacts go to $TRIBUTARY_ARTIFACTS (default: artifacts/).
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-10s}
# The image boot test runs only while the whole run stays within CI's budget
# (45 minutes): it is skipped, saying so, once this many seconds have passed.
IMAGE_DEADLINE=${IMAGE_DEADLINE:-1500}
export TRIBUTARY_IMAGE_CACHE=${TRIBUTARY_IMAGE_CACHE:-/var/cache/tributary-image}
# geth for the StreamRegistry tests (registry/registrytest), built once per go-ethereum version of go.mod
# and kept outside the checkout like the image's base rootfs.
export TRIBUTARY_GETH_CACHE=${TRIBUTARY_GETH_CACHE:-/var/cache/tributary-geth}

# First, before anything is installed: every host command the scripts call must come from a package a
# fresh machine has or the calling script installs, and every script must stop at a failed step.
echo "== scripts: host packages and error handling (scripts/scriptcheck)"
go run ./scripts/scriptcheck

# shellcheck source=scripts/pkg-lib.sh
source scripts/pkg-lib.sh

command -v node >/dev/null && command -v npm >/dev/null || install_missing nodejs npm
install_missing softhsm2 swtpm swtpm-tools mosquitto mosquitto-clients systemd gcc make dpkg-dev protobuf-compiler libprotobuf-dev
# The app interfaces' tests (gateway/app*_test.go) drive the gateway with curl, a Python WebSocket app
# and a page in headless Chromium (gateway's TestWebSocketBrowserPage, over the DevTools protocol);
# Chromium also drives the status page (cmd/bridge's TestStatusPageBrowser).
install_missing curl python3-websockets chromium

# CI artifacts (the browser tests' screenshots, the status page's among them) are kept here.
export TRIBUTARY_ARTIFACTS=${TRIBUTARY_ARTIFACTS:-$PWD/artifacts}
mkdir -p "$TRIBUTARY_ARTIFACTS"

export TRIBUTARY_REQUIRE_TOOLS=1 TRIBUTARY_REQUIRE_NODE=1

echo "== npm packages for the Streamr SDK cross-check"
(cd streamr/testdata/sdkcheck && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "== npm packages for the WebSocket app test (ws)"
(cd gateway/testdata/apps/wsnode && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "== npm packages for the Streamr Network interop tests (streamrnet: two real JS nodes, node-datachannel stand-in)"
(cd streamrnet/testdata/jsnode && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
if [ -n "${TRIBUTARY_STREAMR_SDK:-}" ]; then
	# Opt-in: the full @streamr/sdk compiles sqlite3 from source (g++, make, python3; 2m12s CPU, ~150 MB).
	echo "== npm packages for the full Streamr SDK subscriber test (TRIBUTARY_STREAMR_SDK)"
	install_missing g++ make python3
	(cd streamrnet/testdata/sdk && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== npm packages for the test StreamRegistry (solc-js) and its artifact's freshness"
(cd contracts && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && node build.js --check)

geth_version=$(go list -m -f '{{.Version}}' github.com/ethereum/go-ethereum)
if [ ! -x "$TRIBUTARY_GETH_CACHE/$geth_version/geth" ]; then
	echo "== geth $geth_version for the StreamRegistry tests (built once into $TRIBUTARY_GETH_CACHE)"
	mkdir -p "$TRIBUTARY_GETH_CACHE/$geth_version"
	GOBIN="$TRIBUTARY_GETH_CACHE/$geth_version" go install "github.com/ethereum/go-ethereum/cmd/geth@$geth_version"
fi

echo "== go vet"
go vet ./...
CGO_ENABLED=1 go vet -tags pkcs11 ./hw/...

echo "== quality gates: gofmt, staticcheck, govulncheck (make lint)"
make lint

echo "== go test (race detector)"
go test -race -timeout 25m ./...

echo "== PKCS#11 backend (cgo, SoftHSM2) and the SDK cross-check of every hardware backend"
crosscheck=$(mktemp -d)
trap 'rm -rf "$crosscheck"' EXIT
CGO_ENABLED=1 TRIBUTARY_CROSSCHECK_DIR="$crosscheck" go test -race -tags pkcs11 -count=1 ./hw/...
# Group keys sealed through real gateways with a SoftHSM2 key (the bridges are built with the tag too).
CGO_ENABLED=1 go test -race -tags pkcs11 -count=1 -run 'TestSealedGroupKeysPKCS11' ./cmd/bridge/
go run ./scripts/crosscheck "$crosscheck"

echo "== fuzzing: every Fuzz target for $FUZZTIME"
grep -rl --include='*_test.go' --exclude-dir=testdata --exclude-dir=node_modules '^func Fuzz' . | while read -r file; do
	pkg="./$(dirname "${file#./}")"
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "-- $pkg $target"
		FUZZTIME=$FUZZTIME scripts/fuzz.sh "$pkg" "$target"
	done
done

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./... >/dev/null

echo "== cross builds (static, with cgo; stripped sizes) and .deb packages"
make cross deb

echo "== the .deb installs, starts its unit and purges cleanly (mmdebstrap chroot)"
packaging/test-deb.sh "$(ls -t dist/tributary_*_amd64.deb | head -n1)"

echo "== Raspberry Pi image: build, boot in QEMU, first-boot config, READY, MQTT publish, bridge export"
if ((SECONDS < IMAGE_DEADLINE)); then
	BRIDGE=dist/bridge-linux-arm64 firmware-image/test-boot.sh
else
	echo "SKIPPED firmware-image/test-boot.sh: ${SECONDS}s used, over IMAGE_DEADLINE=${IMAGE_DEADLINE}s (run it alone)"
fi
echo "test.sh: all passed in ${SECONDS}s"
