#!/usr/bin/env bash
# Overlay benchmark (issue 4): QoS 1 readings in on bridge A's MQTT, signed,
# stored, forwarded over the libp2p overlay to bridge B, out of B's MQTT to a
# subscriber; against mosquitto as one plain broker with the same load, in
# the same run. 10 publishers, 200-byte JSON, 1 subscriber.
#
#   scripts/bench-overlay.sh            # 10 s per scenario
#   DURATION=30s scripts/bench-overlay.sh
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
MOSQ_PORT=${MOSQ_PORT:-18841}
A_MQTT=${A_MQTT:-18842} A_HTTP=${A_HTTP:-18843} A_P2P=${A_P2P:-18844}
B_MQTT=${B_MQTT:-18845} B_HTTP=${B_HTTP:-18846} B_P2P=${B_P2P:-18847}

source scripts/bench-lib.sh
bench_setup
ensure_mosquitto
build_tools

overlay_table() { # port [bootstrap]
	echo "[overlay]
listen = [\"/ip4/127.0.0.1/tcp/$1\"]
bootstrap = [${2:+\"$2\"}]
mdns = false
nat = false
dht = false
retry = \"100ms\""
}

run_pair() { # scenario rate
	rm -rf "$work/a" "$work/b"
	bridge_config "$work/a.toml" "$work/a" "$A_MQTT" "$A_HTTP" "$(overlay_table "$A_P2P")"
	local addr; addr=$("$work/bridge" key new --config "$work/a.toml" | cut -d' ' -f1)
	"$work/bridge" run --config "$work/a.toml" 2>"$work/a-$1.log" & local apid=$!
	pids+=("$apid")
	wait_port "$A_MQTT"
	local peer=""
	for _ in $(seq 100); do
		peer=$(grep -o 'msg="overlay listening" peer_id=[^ ]*' "$work/a-$1.log" | cut -d= -f3) && [ -n "$peer" ] && break
		sleep 0.1
	done
	local subs=""
	for i in $(seq 0 9); do
		subs+="
[[subscribe]]
stream = \"$addr/bench/p$i\"
topic = \"{stream}\"
"
	done
	bridge_config "$work/b.toml" "$work/b" "$B_MQTT" "$B_HTTP" "$(overlay_table "$B_P2P" "/ip4/127.0.0.1/tcp/$A_P2P/p2p/$peer")
$subs"
	"$work/bridge" run --config "$work/b.toml" 2>"$work/b-$1.log" & local bpid=$!
	pids+=("$bpid")
	wait_port "$B_MQTT"
	sleep 3 # overlay mesh forms (GossipSub heartbeat)
	"$work/mqttload" -broker "127.0.0.1:$A_MQTT" -sub-broker "127.0.0.1:$B_MQTT" -sub-topic "$addr/bench/#" \
		-rate "$2" -duration "$DURATION" >"$work/bridge-$1.json"
	echo "{\"a_vmhwm_kb\": $(peak_rss_kb "$apid"), \"b_vmhwm_kb\": $(peak_rss_kb "$bpid")}" >"$work/bridge-$1-proc.json"
	kill "$apid" "$bpid"; wait "$apid" "$bpid" 2>/dev/null || true
}

echo "running: duration $DURATION per scenario, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)" >&2
run_mosquitto max 0 "$MOSQ_PORT"
run_pair max 0
run_mosquitto 2000 2000 "$MOSQ_PORT"
run_pair 2000 2000

python3 - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
def load(name): return json.load(open(f"{w}/{name}.json"))
print("| scenario | path | acked msg/s | recv msg/s | e2e p50 ms | e2e p99 ms | received of acked |")
print("|---|---|---|---|---|---|---|")
for sc in ("max", "2000"):
    for b, label in (("mosquitto", "mosquitto (one broker)"), ("bridge", "bridge A → overlay → bridge B")):
        r = load(f"{b}-{sc}")
        print(f"| {sc} | {label} | {r['ack_rate']:.0f} | {r['recv_rate']:.0f} | {r['e2e_p50_ms']:.2f} | {r['e2e_p99_ms']:.2f} | {r['received']}/{r['acked']} |")
m, b = load("mosquitto-max"), load("bridge-max")
print(f"\nend-to-end throughput ratio bridges/mosquitto (max, received msg/s): {b['recv_rate']/max(m['recv_rate'],1):.2f}")
for sc in ("max", "2000"):
    p = load(f"bridge-{sc}-proc")
    print(f"{sc}: peak RSS bridge A {p['a_vmhwm_kb']/1024:.1f} MB, bridge B {p['b_vmhwm_kb']/1024:.1f} MB")
EOF
