#!/usr/bin/env bash
# Fuzzes one target for FUZZTIME (default 10s), from the module in the current directory:
#
#   scripts/fuzz.sh ./pkg FuzzTarget
#
# A worker that stops making progress is a finding, like a crash: an input on which a decoder hangs can
# hang the gateway. Go does not fail on it: a hung worker shows as progress lines with 0 execs/sec while
# the run still passes, or as "context deadline exceeded" at the end of -fuzztime, with no input
# written. Here either fails the target, with its whole output: two progress lines in a row (6 s) with
# no exec before the deadline, or the deadline error.
#
# Minimization is off (-fuzzminimizetime 0): Go does not count its execs, so a worker minimizing a new
# input looks exactly like a stalled one, and in a 10 s run it would only take the time from fuzzing.
# A failing input is still written to testdata/fuzz, unminimized.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
pkg=${1:?usage: fuzz.sh PKG TARGET}
target=${2:?usage: fuzz.sh PKG TARGET}
FUZZTIME=${FUZZTIME:-10s}

# stalled reads go test's output and succeeds when it shows a stalled worker before the deadline
# ($1, a Go duration such as 10s or 1m30s; a count such as 100x has none).
stalled() {
	awk -v fuzztime="$1" '
	function seconds(d, a, s) { # a Go duration of h, m and whole s; -1 if it is not one
		if (d == "" || d !~ /^([0-9]+h)?([0-9]+m)?([0-9]+s)?$/) return -1
		s = 0
		if (d ~ /h/) { split(d, a, "h"); s += a[1] * 3600; d = a[2] }
		if (d ~ /m/) { split(d, a, "m"); s += a[1] * 60; d = a[2] }
		sub(/s$/, "", d)
		return s + d
	}
	BEGIN { limit = seconds(fuzztime); if (limit < 0) limit = 1e9 }
	/context deadline exceeded/ { stall = 1 }
	$2 == "elapsed:" && $4 == "execs:" {
		t = $3; sub(/,$/, "", t); s = seconds(t)
		if ($6 == "(0/sec)," && s > 0 && s < limit) { if (++zeros >= 2) stall = 1 } else { zeros = 0 }
	}
	END { exit !stall }'
}

rc=0
out=$(go test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 0 -parallel 2 "$pkg" 2>&1) || rc=$?
if stalled "$FUZZTIME" <<<"$out"; then
	echo "$out"
	echo "FAIL $pkg $target: a fuzz worker stalled (no exec for 6 s, or the deadline passed while a worker was busy)." >&2
	echo "  A hang on one input is a finding: run the target alone with -parallel 1 and look at the input it last got." >&2
	exit 1
fi
if ((rc != 0)); then
	echo "$out"
	exit "$rc"
fi
tail -n 2 <<<"$out"
