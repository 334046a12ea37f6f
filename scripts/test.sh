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
install_missing softhsm2 swtpm swtpm-tools mosquitto mosquitto-clients systemd gcc dpkg-dev mmdebstrap

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

echo "== fuzzing: every Fuzz target for $FUZZTIME"
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r file; do
	pkg="./$(dirname "${file#./}")"
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "-- $pkg $target"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel 2 "$pkg"
	done
done

echo "== benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x ./... >/dev/null

echo "== cross builds (CGO_ENABLED=0)"
for target in linux/arm64 linux/arm/6 linux/arm/7 linux/amd64; do
	IFS=/ read -r os arch arm <<<"$target"
	GOOS=$os GOARCH=$arch GOARM=$arm CGO_ENABLED=0 go build -o /dev/null ./cmd/bridge
done
echo "test.sh: all passed"
