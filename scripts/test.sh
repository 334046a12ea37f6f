#!/usr/bin/env bash
# Runs Tributary's whole test suite on a fresh Debian machine with Go,
# installing what the tests need when it is missing: simulators for the
# hardware keys (SoftHSM2, swtpm), Node.js for the Streamr SDK cross-check,
# mosquitto clients, and systemd-analyze for the unit checks.
#
# Every test that needs one of these fails (instead of skipping) here,
# because TRIBUTARY_REQUIRE_TOOLS and TRIBUTARY_REQUIRE_NODE are set.
# Long soak and load runs are separate: see the README ("Long runs").
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-10s}
# The image boot test runs only while the whole run stays within CI's budget
# (45 minutes): it is skipped, saying so, once this many seconds have passed.
IMAGE_DEADLINE=${IMAGE_DEADLINE:-1500}
export TRIBUTARY_IMAGE_CACHE=${TRIBUTARY_IMAGE_CACHE:-/var/cache/tributary-image}

install_missing() {
	local need=() pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
	done
	((${#need[@]})) || return 0
	echo "test.sh: installing ${need[*]}"
	local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
}

command -v node >/dev/null && command -v npm >/dev/null || install_missing nodejs npm
install_missing softhsm2 swtpm swtpm-tools mosquitto mosquitto-clients systemd gcc make dpkg-dev

export TRIBUTARY_REQUIRE_TOOLS=1 TRIBUTARY_REQUIRE_NODE=1

echo "== npm packages for the Streamr SDK cross-check"
(cd streamr/testdata/sdkcheck && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "== go vet"
go vet ./...
CGO_ENABLED=1 go vet -tags pkcs11 ./hw/...

echo "== go test (race detector)"
go test -race -timeout 25m ./...

echo "== PKCS#11 backend (cgo, SoftHSM2) and the SDK cross-check of every hardware backend"
crosscheck=$(mktemp -d)
trap 'rm -rf "$crosscheck"' EXIT
CGO_ENABLED=1 TRIBUTARY_CROSSCHECK_DIR="$crosscheck" go test -race -tags pkcs11 -count=1 ./hw/...
go run ./scripts/crosscheck "$crosscheck"

# fuzz runs one target. Go's fuzzing coordinator sometimes stops at the end of
# -fuzztime with "context deadline exceeded" while a worker is busy; that is
# not a finding (no failing input is written), so it is run once more.
fuzz() {
	local out
	if out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" -parallel 2 "$1" 2>&1); then
		echo "$out" | tail -n 2
		return 0
	fi
	echo "$out"
	if grep -q "context deadline exceeded" <<<"$out" && ! grep -q "Failing input written" <<<"$out"; then
		echo "-- $1 $2: the fuzzing coordinator hit its deadline without a finding; running again"
		go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" -parallel 2 "$1"
		return
	fi
	return 1
}

echo "== fuzzing: every Fuzz target for $FUZZTIME"
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r file; do
	pkg="./$(dirname "${file#./}")"
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "-- $pkg $target"
		fuzz "$pkg" "$target"
	done
done

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./... >/dev/null

echo "== cross builds (CGO_ENABLED=0, stripped sizes) and .deb packages"
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
