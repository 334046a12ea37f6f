#!/usr/bin/env bash
# Persistent-session delivery benchmark (issue 12): the rate at which the
# gateway's broker delivers into one connected persistent-session QoS 1
# consumer, with durable queueing (Badger) and without (memory), against
# mosquitto with `persistence true`, the same load in the same run
# (BenchmarkSessionDelivery in cmd/bridge/sessions_bench_test.go).
#
#   scripts/bench-sessions.sh              # 20,000 messages per case, 3 runs
#   N=100000 COUNT=5 scripts/bench-sessions.sh
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

N=${N:-20000}
COUNT=${COUNT:-3}

source scripts/bench-lib.sh
ensure_mosquitto
PATH="$(dirname "$MOSQUITTO"):$PATH"

echo "running: $N messages x $COUNT per case, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)" >&2
go test -run '^$' -bench 'BenchmarkSessionDelivery' -benchtime "${N}x" -count "$COUNT" ./cmd/bridge/ | tee /dev/stderr |
	awk '/msg\/s/ { split($1, a, "/"); c = a[2]; sub(/-[0-9]+$/, "", c); s[c] += $5; n[c]++ }
	END {
		for (c in s) printf "%-10s %8.0f msg/s (mean of %d)\n", c, s[c]/n[c], n[c]
		if (n["mosquitto"] && n["durable"]) printf "durable/mosquitto %.2f  memory/mosquitto %.2f  durable/memory %.2f\n",
			(s["durable"]/n["durable"])/(s["mosquitto"]/n["mosquitto"]), (s["memory"]/n["memory"])/(s["mosquitto"]/n["mosquitto"]),
			(s["durable"]/n["durable"])/(s["memory"]/n["memory"])
	}'
