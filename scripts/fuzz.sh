#!/usr/bin/env bash
# Fuzzes one target for FUZZTIME (default 10s), from the module in the current directory:
#
#   scripts/fuzz.sh ./pkg FuzzTarget
#
# A worker that stops making progress is a finding, like a crash: an input on which a decoder hangs can
# hang the gateway. Go does not fail on it: a hung worker shows as progress lines with 0 execs/sec (and
# the run still passes), or as "context deadline exceeded" at the end of -fuzztime, with no input written.
# Either fails here, with the target's whole output.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
pkg=${1:?usage: fuzz.sh PKG TARGET}
target=${2:?usage: fuzz.sh PKG TARGET}
FUZZTIME=${FUZZTIME:-10s}

rc=0
out=$(go test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" -parallel 2 "$pkg" 2>&1) || rc=$?
if grep -qE 'context deadline exceeded|elapsed: [1-9][0-9]*[smh].*, execs: [0-9]+ \(0/sec\)' <<<"$out"; then
	echo "$out"
	echo "FAIL $pkg $target: a fuzz worker stalled (no execs for seconds, or the deadline passed while a worker was busy)." >&2
	echo "  A hang on one input is a finding: run the target alone with -parallel 1 and look at the input it last got." >&2
	exit 1
fi
if ((rc != 0)); then
	echo "$out"
	exit "$rc"
fi
tail -n 2 <<<"$out"
