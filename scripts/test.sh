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
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-10s}
# The image boot test runs only while the whole run stays within CI's budget
# (45 minutes): it is skipped, saying so, once this many seconds have passed.
IMAGE_DEADLINE=${IMAGE_DEADLINE:-1500}
export TRIBUTARY_IMAGE_CACHE=${TRIBUTARY_IMAGE_CACHE:-/var/cache/tributary-image}

# First, before anything is installed: every host command the scripts call must come from a package a
# fresh machine has or the calling script installs, and every script must stop at a failed step.
echo "== scripts: host packages and error handling (scripts/scriptcheck)"
go run ./scripts/scriptcheck

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

echo "== quality gates: gofmt, staticcheck, govulncheck (make lint)"
make lint

echo "== go test (race detector)"
go test -race -timeout 25m ./...

echo "== PKCS#11 backend (cgo, SoftHSM2) and the SDK cross-check of every hardware backend"
crosscheck=$(mktemp -d)
trap 'rm -rf "$crosscheck"' EXIT
CGO_ENABLED=1 TRIBUTARY_CROSSCHECK_DIR="$crosscheck" go test -race -tags pkcs11 -count=1 ./hw/...
go run ./scripts/crosscheck "$crosscheck"

# fuzz runs one target. A worker that stops making progress is a finding, like a crash: an input on which
# a decoder hangs can hang the gateway. Go reports it as "context deadline exceeded" at the end of
# -fuzztime (without writing the input), or as a progress line with 0 execs/sec; either fails the run.
fuzz() {
	local out rc=0
	out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" -parallel 2 "$1" 2>&1) || rc=$?
	if grep -qE 'context deadline exceeded|elapsed: [1-9][0-9]*[smh].*, execs: [0-9]+ \(0/sec\)' <<<"$out"; then
		echo "$out"
		echo "FAIL $1 $2: a fuzz worker stalled (no execs for seconds, or the coordinator's deadline passed while a worker was busy)." >&2
		echo "  A hang on one input is a finding: run the target alone with -parallel 1 and look at the input it last got." >&2
		return 1
	fi
	if ((rc != 0)); then
		echo "$out"
		return "$rc"
	fi
	echo "$out" | tail -n 2
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
