#!/usr/bin/env bash
# Overlay benchmark (issues 4 and 11): QoS 1 readings in on bridge A's MQTT,
# signed, stored, forwarded over the libp2p overlay to bridge B, out of B's
# MQTT to a subscriber; against mosquitto as one plain broker with the same
# load, in the same run. 10 publishers, 200-byte JSON, 1 subscriber.
#
# Then the backlog drain: A stores readings for DURATION with no peer, then
# a storing bridge B connects and the time until B has stored them all is
# measured; beside it, in the same run, B's physical limit (bare decode and
# signature verification on one core, BenchmarkDecodeVerifyEVM) and
# mosquitto delivering the same number of QoS 1 messages queued for a
# persistent-session subscriber that reconnects.
#
#   scripts/bench-overlay.sh            # 10 s per scenario
#   DURATION=30s scripts/bench-overlay.sh
#   SCENARIOS=drain scripts/bench-overlay.sh   # only the drain ("pair": only the two load scenarios)
#   SCENARIOS="limits p2000" scripts/bench-overlay.sh # only the limits and the 2,000 msg/s pair
#   BASELINE_BIN=/tmp/bridge-main DRAIN_ROUNDS=2 SCENARIOS=drain scripts/bench-overlay.sh
#       # the drain with that binary too, back to back on the same backlog, twice each
#   BASELINE_BIN=/tmp/bridge-main PAIR_ROUNDS=2 SCENARIOS=p2000 scripts/bench-overlay.sh
#       # the 2,000 msg/s pair with that binary too, alternating, twice each
#   PROF_DIR=/tmp/p SCENARIOS=drain scripts/bench-overlay.sh
#       # Go CPU profiles of A and B (http debug_pprof) during each drain's
#       # first PROF_SECONDS (default 8) in /tmp/p
#   PERF_DIR=/tmp/p SCENARIOS=max scripts/bench-overlay.sh
#       # only the max-load pair, with bridge B's CPU profile (perf record -g)
#       # during the load in /tmp/p
#   PPROF_DIR=/tmp/p SCENARIOS=p2000 scripts/bench-overlay.sh
#       # with http.debug_pprof on both bridges: their heap profiles at the
#       # end of the load (go tool pprof -sample_index=alloc_space: all the
#       # allocations since start) and a CPU profile of B during it
#   TRACE_DIR=/tmp/t SCENARIOS=p2000 scripts/bench-overlay.sh
#       # keep the pair's bridge logs (with GODEBUG=gctrace=1) and the
#       # per-reading e2e timeline (send offset, latency) in /tmp/t
#   SHED_QUEUE_DEPTH=1024 BASELINE_SHED_QUEUE_WAIT= BASELINE_BIN=/tmp/bridge-main SCENARIOS="max p2000" scripts/bench-overlay.sh
#       # this build shedding by queue depth (SHED_QUEUE_WAIT: by wait), against
#       # BASELINE_BIN on its defaults (BASELINE_SHED_QUEUE_WAIT: its shed_queue_wait)
#
# The e2e latency is reported for the whole run and for its steady state
# (readings sent 1 s or more after the first publish), with the p99 of
# every second: a fresh process's warm-up shows apart from steady-state
# events instead of being hidden in, or left out of, one figure.
#
# Physical limits, measured in the same run (SCENARIOS token "limits", on by
# default): the fsync latency a synced commit waits for on this disk
# (bench/fsyncprobe in the state directory's file system), and the CPU of
# the crypto every reading needs — sign+encode on A (BenchmarkSignEncodeEVM)
# and decode+verify on B (BenchmarkDecodeVerifyEVM), each on one core. The
# end-to-end p99 is set against fsync p99 + sign + verify (the latency
# floor of a reading that is durable before it is forwarded), the
# throughput at max load against the crypto-only rate on all cores
# (nproc / (sign + verify)).
#
# Every figure is printed as a ratio to its peer or target from the same
# run, with the load average at its start and end. The pair scenarios also
# print each bridge's CPU per reading during the load (from /proc), which
# a shared machine's load moves far less than latency.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
SCENARIOS=${SCENARIOS:-limits pair drain}
DRAIN_ROUNDS=${DRAIN_ROUNDS:-1}
PAIR_ROUNDS=${PAIR_ROUNDS:-1}
MOSQ_PORT=${MOSQ_PORT:-18841}
A_MQTT=${A_MQTT:-18842} A_HTTP=${A_HTTP:-18843} A_P2P=${A_P2P:-18844}
B_MQTT=${B_MQTT:-18845} B_HTTP=${B_HTTP:-18846} B_P2P=${B_P2P:-18847}

source scripts/bench-lib.sh
# PPROF_DIR (heap and CPU profiles) and PROF_DIR (the drain's profiles) need /debug/pprof
[ -z "${PPROF_DIR:-}${PROF_DIR:-}" ] || DEBUG_PPROF=1
bench_setup
ensure_mosquitto
if [ -n "${PERF_DIR:-}" ] && ! command -v perf >/dev/null; then # PERF_DIR profiles B with perf
	sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf
fi
build_tools
go build -o "$work/fsyncprobe" ./bench/fsyncprobe
if [ -n "${BASELINE_BIN:-}" ]; then cp "$BASELINE_BIN" "$work/bridge-baseline"; fi

overlay_table() { # port [bootstrap [bin]]
	echo "[overlay]
listen = [\"/ip4/127.0.0.1/tcp/$1\"]
bootstrap = [${2:+\"$2\"}]
mdns = false
nat = false
dht = false
retry = \"100ms\""
	# The live path's shedding: SHED_QUEUE_WAIT and SHED_QUEUE_DEPTH for this
	# build; BASELINE_SHED_QUEUE_WAIT (default: SHED_QUEUE_WAIT; "": the
	# build's default) for BASELINE_BIN's, which may lack shed_queue_depth.
	local wait=${SHED_QUEUE_WAIT:-} depth=${SHED_QUEUE_DEPTH:-}
	if [ "${3:-}" = "$work/bridge-baseline" ]; then wait=${BASELINE_SHED_QUEUE_WAIT-$wait} depth=""; fi
	if [ -n "$wait" ]; then echo "shed_queue_wait = \"$wait\""; fi
	if [ -n "$depth" ]; then echo "shed_queue_depth = $depth"; fi
}

# run_pair SCENARIO RATE [BIN]: the pair loaded at RATE (0: max), with BIN
# (default: this build); results in $work/bridge-SCENARIO*.json.
run_pair() {
	local bin=${3:-$work/bridge}
	local env=(); [ -z "${TRACE_DIR:-}" ] || env=(env GODEBUG=gctrace=1)
	rm -rf "$work/a" "$work/b"
	bridge_config "$work/a.toml" "$work/a" "$A_MQTT" "$A_HTTP" "$(overlay_table "$A_P2P" "" "$bin")"
	local addr; addr=$("$work/bridge" key new --config "$work/a.toml" | cut -d' ' -f1)
	"${env[@]}" "$bin" run --config "$work/a.toml" 2>"$work/a-$1.log" & local apid=$!
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
	bridge_config "$work/b.toml" "$work/b" "$B_MQTT" "$B_HTTP" "$(overlay_table "$B_P2P" "/ip4/127.0.0.1/tcp/$A_P2P/p2p/$peer" "$bin")
$subs"
	"${env[@]}" "$bin" run --config "$work/b.toml" 2>"$work/b-$1.log" & local bpid=$!
	pids+=("$bpid")
	wait_port "$B_MQTT"
	sleep 3 # overlay mesh forms (GossipSub heartbeat)
	note_load "bridge-$1" start
	local perfpid=""
	if [ -n "${PERF_DIR:-}" ]; then # B's CPU profile during the load
		mkdir -p "$PERF_DIR"
		perf record -q -F 997 -g -p "$bpid" -o "$PERF_DIR/b-$1.perf" 2>/dev/null & perfpid=$!
	fi
	local cpuprof=""
	if [ -n "${PPROF_DIR:-}" ]; then # B's Go CPU profile during the load
		mkdir -p "$PPROF_DIR"
		curl -sf -o "$PPROF_DIR/b-$1.cpu" "http://127.0.0.1:$B_HTTP/debug/pprof/profile?seconds=8" & cpuprof=$!
	fi
	local acpu bcpu; acpu=$(cpu_ticks "$apid") bcpu=$(cpu_ticks "$bpid")
	local await bwait; await=$(runq_wait_ns "$apid") bwait=$(runq_wait_ns "$bpid")
	"$work/mqttload" -broker "127.0.0.1:$A_MQTT" -sub-broker "127.0.0.1:$B_MQTT" -sub-topic "$addr/bench/#" \
		-rate "$2" -duration "$DURATION" -timeline "$work/bridge-$1-timeline.csv" >"$work/bridge-$1.json"
	note_load "bridge-$1" end
	if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
	if [ -n "${PPROF_DIR:-}" ]; then
		wait "$cpuprof" || true
		curl -sf -o "$PPROF_DIR/a-$1.heap" "http://127.0.0.1:$A_HTTP/debug/pprof/heap" || true
		curl -sf -o "$PPROF_DIR/b-$1.heap" "http://127.0.0.1:$B_HTTP/debug/pprof/heap" || true
	fi
	acpu=$(($(cpu_ticks "$apid") - acpu)) bcpu=$(($(cpu_ticks "$bpid") - bcpu))
	await=$(($(runq_wait_ns "$apid") - await)) bwait=$(($(runq_wait_ns "$bpid") - bwait))
	echo "{\"a_vmhwm_kb\": $(peak_rss_kb "$apid"), \"b_vmhwm_kb\": $(peak_rss_kb "$bpid"), \"a\": {$(rss_split_kb "$apid")}, \"b\": {$(rss_split_kb "$bpid")},
 \"a_cpu_s\": $(python3 -c "print($acpu / $(getconf CLK_TCK))"), \"b_cpu_s\": $(python3 -c "print($bcpu / $(getconf CLK_TCK))"),
 \"a_runq_wait_s\": $(python3 -c "print($await / 1e9)"), \"b_runq_wait_s\": $(python3 -c "print($bwait / 1e9)")}" >"$work/bridge-$1-proc.json"
	curl -sf "http://127.0.0.1:$A_HTTP/metrics" >"$work/a-$1.metrics" || true # both bridges' counters at the end of the load
	curl -sf "http://127.0.0.1:$B_HTTP/metrics" >"$work/b-$1.metrics" || true
	if [ -n "${TRACE_DIR:-}" ]; then mkdir -p "$TRACE_DIR" && cp "$work/a-$1.metrics" "$work/b-$1.metrics" "$TRACE_DIR/"; fi
	kill "$apid" "$bpid"; wait "$apid" "$bpid" 2>/dev/null || true
	if [ -n "${TRACE_DIR:-}" ]; then # the tables' files' times date Badger's flushes and compactions
		mkdir -p "$TRACE_DIR" && cp "$work/a-$1.log" "$work/b-$1.log" "$work/bridge-$1.json" "$work/bridge-$1-timeline.csv" "$TRACE_DIR/"
		find "$work/a" "$work/b" -name '*.sst' -printf '%p %T@\n' >"$TRACE_DIR/sst-$1.txt"
	fi
}

# run_drain: A buffers readings offline, then storing bridge B drains them:
# the backlog is filled once and A's state directory kept, so that every
# drain (this build, and BASELINE_BIN's if set, DRAIN_ROUNDS times each,
# alternating) starts from the same backlog.
run_drain() {
	drain_fill
	local r
	for r in $(seq "$DRAIN_ROUNDS"); do
		if [ -n "${BASELINE_BIN:-}" ]; then
			drain_once "$work/bridge-baseline" "baseline-$r"
		fi
		drain_once "$work/bridge" "$r"
	done
	run_mosquitto_backlog "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['n'])" "$work/drain-1.json")"
}

# drain_fill: A stores DURATION of readings at full rate with no peer,
# signs them all and stops; its state directory is kept in $work/a-backlog.
drain_fill() {
	rm -rf "$work/a" "$work/a-backlog"
	bridge_config "$work/a.toml" "$work/a" "$A_MQTT" "$A_HTTP" "$(overlay_table "$A_P2P")
[storage]
quota = \"8GB\""
	drain_addr=$("$work/bridge" key new --config "$work/a.toml" | cut -d' ' -f1)
	"$work/bridge" run --config "$work/a.toml" 2>"$work/a-fill.log" & local apid=$!
	pids+=("$apid")
	wait_port "$A_MQTT"
	"$work/mqttload" -broker "127.0.0.1:$A_MQTT" -subscribe=false -rate 0 -duration "$DURATION" >"$work/drain-fill.json"
	drain_n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['acked'])" "$work/drain-fill.json")
	until [ "$(metric "$A_HTTP" tributary_messages_signed_total)" -ge "$drain_n" ]; do sleep 0.2; done
	kill "$apid"; wait "$apid" 2>/dev/null || true
	cp -a "$work/a" "$work/a-backlog"
}

# drain_once BIN NAME: A (BIN) on a copy of the backlog, then a storing
# bridge B (BIN) started and timed until it has stored all of it; the CPU
# time both used meanwhile is read from /proc (utime + stime).
drain_once() {
	rm -rf "$work/a" "$work/b"
	cp -a "$work/a-backlog" "$work/a"
	"$1" run --config "$work/a.toml" 2>"$work/a-drain-$2.log" & local apid=$!
	pids+=("$apid")
	wait_port "$A_MQTT"
	local peer=""
	until [ -n "$peer" ]; do
		sleep 0.1
		peer=$(grep -o 'msg="overlay listening" peer_id=[^ ]*' "$work/a-drain-$2.log" | cut -d= -f3) || true
	done
	local stores=""
	for i in $(seq 0 9); do stores+="
[[store]]
stream = \"$drain_addr/bench/p$i\"
"; done
	bridge_config "$work/b.toml" "$work/b" "$B_MQTT" "$B_HTTP" "$(overlay_table "$B_P2P" "/ip4/127.0.0.1/tcp/$A_P2P/p2p/$peer" "$1")
$stores"
	local a0; a0=$(cpu_ticks "$apid")
	note_load "drain-$2" start
	local start; start=$(date +%s.%N)
	"$1" run --config "$work/b.toml" 2>"$work/b-drain-$2.log" & local bpid=$!
	pids+=("$bpid")
	wait_port "$B_HTTP"
	if [ -n "${PROF_DIR:-}" ]; then # CPU profiles of A and B during the drain's first PROF_SECONDS
		mkdir -p "$PROF_DIR"
		curl -s -o "$PROF_DIR/a-drain-$2.pprof" "http://127.0.0.1:$A_HTTP/debug/pprof/profile?seconds=${PROF_SECONDS:-8}" &
		curl -s -o "$PROF_DIR/b-drain-$2.pprof" "http://127.0.0.1:$B_HTTP/debug/pprof/profile?seconds=${PROF_SECONDS:-8}" &
	fi
	local stored=0 first=""
	until [ "$stored" -ge "$drain_n" ]; do
		sleep 0.1
		stored=$(metric "$B_HTTP" 'tributary_order_delivered_total{orderer="store"}')
		[ -n "$first" ] || [ "$stored" -eq 0 ] || first=$(date +%s.%N)
		[ -z "${PROF_DIR:-}" ] || echo "$(date +%s.%N) $stored" >>"$PROF_DIR/timeline-$2.txt"
	done
	local end; end=$(date +%s.%N)
	if [ -n "${PROF_DIR:-}" ]; then
		curl -s -o "$PROF_DIR/b-block-$2.pprof" "http://127.0.0.1:$B_HTTP/debug/pprof/block"
		echo "$start start" >>"$PROF_DIR/timeline-$2.txt"
		cp "$work/a-drain-$2.log" "$work/b-drain-$2.log" "$PROF_DIR/"
	fi
	local a1 b1; a1=$(cpu_ticks "$apid") b1=$(cpu_ticks "$bpid")
	note_load "drain-$2" end
	echo "{\"n\": $drain_n, \"seconds\": $(python3 -c "print($end - $start)"), \"first_s\": $(python3 -c "print(${first:-$end} - $start)"), \"a_cpu_s\": $(python3 -c "print(($a1 - $a0) / $(getconf CLK_TCK))"), \"b_cpu_s\": $(python3 -c "print($b1 / $(getconf CLK_TCK))"), \"a_vmhwm_kb\": $(peak_rss_kb "$apid"), \"b_vmhwm_kb\": $(peak_rss_kb "$bpid")}" >"$work/drain-$2.json"
	kill "$apid" "$bpid"; wait "$apid" "$bpid" 2>/dev/null || true
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # PID: user + system CPU, in clock ticks
# runq_wait_ns PID: time the process's threads spent runnable but waiting
# for a CPU (schedstat), in ns: what the shared machine's other load cost it.
runq_wait_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%d", s}'; }

# run_mosquitto_backlog N: N QoS 1 messages queued in mosquitto for an
# offline persistent-session subscriber, timed from its reconnect to the
# last message.
run_mosquitto_backlog() {
	cat >"$work/mosquitto.conf" <<CONF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 10000000
max_inflight_messages 0
log_dest none
CONF
	"$MOSQUITTO" -c "$work/mosquitto.conf" & local pid=$!
	wait_port "$MOSQ_PORT"
	mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -c -i drain -q 1 -t 'bench/#' -E
	# about the bridges' backlog, paced over 5 s
	"$work/mqttload" -broker "127.0.0.1:$MOSQ_PORT" -subscribe=false -rate $(($1 / 5)) -duration 5s >"$work/mosq-fill.json"
	local n; n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['acked'])" "$work/mosq-fill.json")
	note_load mosq-drain start
	local start; start=$(date +%s.%N)
	mosquitto_sub -h 127.0.0.1 -p "$MOSQ_PORT" -c -i drain -q 1 -t 'bench/#' -C "$n" >/dev/null
	local end; end=$(date +%s.%N)
	note_load mosq-drain end
	echo "{\"n\": $n, \"seconds\": $(python3 -c "print($end - $start)")}" >"$work/mosq-drain.json"
	kill "$pid"; wait "$pid" 2>/dev/null || true
}

# cpu_ticks PID: user + system CPU the process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

metric() { # http_port name: the metric's value as an integer (0 if absent)
	# curl and awk rather than python: the drain polls this every 0.1 s, and
	# a python start costs ~0.3 s on a loaded machine (the drain's end
	# would be seen that much late).
	{ curl -s --max-time 5 "http://127.0.0.1:$1/metrics" || true; } |
		awk -v name="$2" '$1 == name && !f {v = $2; f = 1} END {printf "%d\n", v + 0}'
}

# verify_limit NAME: bare decode+verify rate on one core, from the same
# build. Taken right before and right after the drain: the load moves
# within minutes, and the drain is judged against both.
verify_limit() {
	[ -x "$work/streamr.test" ] || go test -c -o "$work/streamr.test" ./streamr/
	note_load "verify-$1" start
	GOMAXPROCS=1 "$work/streamr.test" -test.run '^$' -test.bench 'BenchmarkDecodeVerifyEVM$' -test.benchtime 2s -test.count 3 |
		awk '/BenchmarkDecodeVerifyEVM/ {print $3}' | sort -n | head -1 >"$work/verify-$1-ns.txt"
	note_load "verify-$1" end
}

# crypto_limit: sign+encode and decode+verify on one core, from the same
# build (the fastest of 3 runs each: scheduling only adds time).
crypto_limit() {
	[ -x "$work/streamr.test" ] || go test -c -o "$work/streamr.test" ./streamr/
	note_load crypto start
	for b in SignEncodeEVM DecodeVerifyEVM; do
		GOMAXPROCS=1 "$work/streamr.test" -test.run '^$' -test.bench "Benchmark$b\$" -test.benchtime 1s -test.count 3 |
			awk "/Benchmark$b/ {print \$3}" | sort -n | head -1 >"$work/crypto-$b-ns.txt"
	done
	note_load crypto end
}

# fsync_limit: fsync latency on the bridges' disk while nothing else of
# this benchmark runs.
fsync_limit() {
	note_load fsync start
	"$work/fsyncprobe" -dir "$work" -duration 5s >"$work/fsync.json"
	note_load fsync end
}

echo "running: duration $DURATION per scenario, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)" >&2
case " $SCENARIOS " in *" limits "*)
	crypto_limit
	fsync_limit
esac
case " $SCENARIOS " in *" pair "* | *" max "*)
	run_mosquitto max 0 "$MOSQ_PORT"
	for r in $(seq "$PAIR_ROUNDS"); do
		if [ -n "${BASELINE_BIN:-}" ]; then run_pair "max-baseline-$r" 0 "$work/bridge-baseline"; fi
		run_pair "max-r$r" 0
	done
	for f in "" -proc; do cp "$work/bridge-max-r1$f.json" "$work/bridge-max$f.json"; done
	cp "$work/load-bridge-max-r1.json" "$work/load-bridge-max.json"
esac
case " $SCENARIOS " in *" pair "* | *" p2000 "*)
	run_mosquitto 2000 2000 "$MOSQ_PORT"
	for r in $(seq "$PAIR_ROUNDS"); do
		if [ -n "${BASELINE_BIN:-}" ]; then run_pair "2000-baseline-$r" 2000 "$work/bridge-baseline"; fi
		run_pair "2000-r$r" 2000
	done
	cp "$work/bridge-2000-r1.json" "$work/bridge-2000.json"
	cp "$work/bridge-2000-r1-proc.json" "$work/bridge-2000-proc.json"
	cp "$work/load-bridge-2000-r1.json" "$work/load-bridge-2000.json"
esac
case " $SCENARIOS " in *" drain "*)
	verify_limit before
	run_drain
	verify_limit after
esac

python3 - "$work" "$SCENARIOS" "$(nproc)" <<'EOF'
import json, os, sys
w, scenarios, cores = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def load(name): return json.load(open(f"{w}/{name}.json"))
def have(name): return os.path.exists(f"{w}/{name}.json")
def la(name):
    l = load(f"load-{name}")
    return f"load {l['start']:.1f}-{l['end']:.1f}"
limits = None
if "limits" in scenarios:
    sign = float(open(f"{w}/crypto-SignEncodeEVM-ns.txt").read()) / 1e3
    verify = float(open(f"{w}/crypto-DecodeVerifyEVM-ns.txt").read()) / 1e3
    fs = load("fsync")
    crypto_rate = cores * 1e6 / (sign + verify)
    floor = fs["p99_ms"] + (sign + verify) / 1e3
    limits = dict(rate=crypto_rate, floor=floor)
    print(f"physical limits: sign+encode {sign:.1f} us, decode+verify {verify:.1f} us per reading on one core ({la('crypto')}); "
          f"crypto-only rate on {cores} cores {crypto_rate:.0f} msg/s; fsync p50 {fs['p50_ms']:.2f} ms, p99 {fs['p99_ms']:.2f} ms "
          f"({fs['syncs']} syncs, {la('fsync')}); e2e latency floor = fsync p99 + sign + verify = {floor:.2f} ms\n")
scs = [sc for sc in ("max", "2000") if have(f"bridge-{sc}")]
if scs:
    print("| scenario | path | acked msg/s | recv msg/s | e2e p50 ms | e2e p99 ms | received of acked | load |")
    print("|---|---|---|---|---|---|---|---|")
    for sc in scs:
        for b, label in (("mosquitto", "mosquitto (one broker)"), ("bridge", "bridge A → overlay → bridge B")):
            r = load(f"{b}-{sc}")
            print(f"| {sc} | {label} | {r['ack_rate']:.0f} | {r['recv_rate']:.0f} | {r['e2e_p50_ms']:.2f} | {r['e2e_p99_ms']:.2f} | {r['received']}/{r['acked']} | {la(b + '-' + sc)} |")
    print()
if "max" in scs:
    m, b = load("mosquitto-max"), load("bridge-max")
    line = f"end-to-end throughput at max load (received msg/s): bridges/mosquitto {b['recv_rate']/max(m['recv_rate'],1):.2f} (target >= 1.0)"
    if limits:
        line += f", bridges/crypto-only limit {b['recv_rate']/limits['rate']:.2f} ({b['recv_rate']:.0f} of {limits['rate']:.0f} msg/s)"
    print(line + f" ({la('bridge-max')}; mosquitto {la('mosquitto-max')})")
def counters(name):
    """Sums of B's overlay and order counters at the end of a pair run, by metric (and drop reason)."""
    out = {}
    try:
        lines = open(f"{w}/{name}.metrics").read().splitlines()
    except OSError:
        return out
    for l in lines:
        if l.startswith("#") or " " not in l:
            continue
        key, val = l.rsplit(" ", 1)
        metric = key.split("{")[0]
        if metric == "tributary_overlay_drops_total":
            metric += "/" + key.split('reason="')[1].split('"')[0]
        elif metric == "tributary_overlay_refused_total":
            metric += "/" + key.split('rule="')[1].split('"')[0]
        out[metric] = out.get(metric, 0) + float(val)
    return out
for r in range(1, 100):
    for label, name in (("BASELINE_BIN", f"max-baseline-{r}"), ("this build", f"max-r{r}")):
        if not have(f"bridge-{name}"):
            continue
        res, p, c, ca = load(f"bridge-{name}"), load(f"bridge-{name}-proc"), counters(f"b-{name}"), counters(f"a-{name}")
        refused = sum(v for k, v in ca.items() if k.startswith("tributary_overlay_refused_total/resend"))
        drops = ", ".join(f"{k.split('/')[1]} {v:.0f}" for k, v in sorted(c.items()) if k.startswith("tributary_overlay_drops_total/") and v)
        print(f"max round {r}, {label}: recv {res['recv_rate']:.0f} msg/s, received/acked {res['received']}/{res['acked']}, "
              f"B CPU {1e6*p['b_cpu_s']/max(res['received'],1):.0f} us per received; B overlay in {c.get('tributary_overlay_messages_in_total', 0):.0f}, "
              f"duplicates {c.get('tributary_overlay_duplicates_total', 0):.0f}, drops [{drops or 'none'}]; "
              f"order gaps {c.get('tributary_order_gaps_total', 0):.0f}, filled {c.get('tributary_order_filled_total', 0):.0f}, "
              f"lost {c.get('tributary_order_lost_total', 0):.0f}, shared {c.get('tributary_order_fill_shared_total', 0):.0f}; "
              f"A sent {ca.get('tributary_overlay_resend_messages_total', 0):.0f} in resend answers, refused {refused:.0f} requests; "
              f"B's busy retries {c.get('tributary_overlay_resend_busy_retries_total', 0):.0f}; "
              f"e2e p50/p99 {res['e2e_p50_ms']:.0f}/{res['e2e_p99_ms']:.0f} ms ({la('bridge-' + name)})")
if "2000" in scs:
    m2, b2 = load("mosquitto-2000"), load("bridge-2000")
    line = (f"end-to-end p99 at 2,000 msg/s: bridges {b2['e2e_p99_ms']:.2f} ms = {b2['e2e_p99_ms']/5:.2f}x the 5 ms target, "
            f"{b2['e2e_p99_ms']/max(m2['e2e_p99_ms'],0.01):.1f}x mosquitto's {m2['e2e_p99_ms']:.2f} ms")
    if limits:
        line += f", {b2['e2e_p99_ms']/limits['floor']:.1f}x the floor of {limits['floor']:.2f} ms"
    print(line + f" ({la('bridge-2000')}; mosquitto {la('mosquitto-2000')}); p50 {b2['e2e_p50_ms']:.2f} ms vs mosquitto {m2['e2e_p50_ms']:.2f} ms")
    def e2e(name):
        r = load(name)
        secs = " ".join(f"{s['p99_ms']:.1f}" for s in r.get("e2e_seconds", []))
        return (f"whole run p50/p99/max {r['e2e_p50_ms']:.2f}/{r['e2e_p99_ms']:.2f}/{r.get('e2e_max_ms', 0):.1f} ms, "
                f"steady state (sent >= 1 s in) p50/p99 {r.get('e2e_steady_p50_ms', 0):.2f}/{r.get('e2e_steady_p99_ms', 0):.2f} ms; "
                f"p99 per second [{secs}] ({la(name)})")
    print(f"2000 mosquitto: {e2e('mosquitto-2000')}")
    for r in range(1, 100):
        for label, name in (("BASELINE_BIN", f"bridge-2000-baseline-{r}"), ("this build", f"bridge-2000-r{r}")):
            if have(name):
                print(f"2000 round {r}, {label}: {e2e(name)}")
                pr, rr = load(f"{name}-proc"), load(name)
                print(f"2000 round {r}, {label}: peak RSS A {pr['a_vmhwm_kb']/1024:.1f} / B {pr['b_vmhwm_kb']/1024:.1f} MB, "
                      f"PUBACK p99 {rr.get('ack_p99_ms', 0):.2f} ms, CPU per reading A {1e6*pr['a_cpu_s']/max(rr['acked'],1):.0f} / "
                      f"B {1e6*pr['b_cpu_s']/max(rr['received'],1):.0f} us")
for sc in scs:
    p, r = load(f"bridge-{sc}-proc"), load(f"bridge-{sc}")
    # CPU per reading moves less with the shared machine's load than latency does.
    print(f"{sc}: CPU per reading during the load: bridge A {1e6*p['a_cpu_s']/max(r['acked'],1):.0f} us (per acked), "
          f"bridge B {1e6*p['b_cpu_s']/max(r['received'],1):.0f} us (per received) ({la('bridge-' + sc)}); "
          f"run-queue wait (runnable, no CPU) A {p.get('a_runq_wait_s', 0):.2f} s, B {p.get('b_runq_wait_s', 0):.2f} s in {r['duration_s']:.0f} s")
for sc in scs:
    p = load(f"bridge-{sc}-proc")
    a, bb = p['a_vmhwm_kb']/1024, p['b_vmhwm_kb']/1024
    split = lambda x: f"anon {p[x]['anon_kb']/1024:.1f}, file {p[x]['file_kb']/1024:.1f} MB"
    print(f"{sc}: peak RSS bridge A {a:.1f} MB = {a/64:.2f}x, bridge B {bb:.1f} MB = {bb/64:.2f}x the 64 MB target "
          f"(at the end: A {split('a')}; B {split('b')}; {la('bridge-' + sc)})")
if "drain" in scenarios:
    verify = {when: 1e9 / float(open(f"{w}/verify-{when}-ns.txt").read()) for when in ("before", "after")}
    md = load("mosq-drain")
    mrate = md["n"] / md["seconds"]
    def drains(prefix):
        return [load(f"drain-{prefix}{r}") for r in range(1, 100) if have(f"drain-{prefix}{r}")]
    def report(label, ds):
        for r, d in enumerate(ds, 1):
            rate = d["n"] / d["seconds"]
            print(f"backlog drain A -> B ({label}, round {r}): {d['n']} readings in {d['seconds']:.2f} s = {rate:.0f} msg/s ({la(d['load'])}); "
                  f"drain / verify limit = {rate/verify['before']:.2f} / {rate/verify['after']:.2f} (before / after; target >= 0.5); "
                  f"CPU per reading A {d['a_cpu_s']/d['n']*1e6:.0f} us, B {d['b_cpu_s']/d['n']*1e6:.0f} us; peak RSS A {d['a_vmhwm_kb']/1024:.1f} MB, B {d['b_vmhwm_kb']/1024:.1f} MB; "
                  f"first reading stored {d.get('first_s', 0):.2f} s after B started")
        return [d["n"] / d["seconds"] for d in ds]
    print()
    for when in ("before", "after"):
        print(f"physical limit {when} the drains (BenchmarkDecodeVerifyEVM, one core): {verify[when]:.0f} msg/s, {1e6/verify[when]:.0f} us per reading ({la('verify-' + when)})")
    ours = drains("")
    for r, d in enumerate(ours, 1):
        d["load"] = f"drain-{r}"
    rates = report("this build", ours)
    base = drains("baseline-")
    for r, d in enumerate(base, 1):
        d["load"] = f"drain-baseline-{r}"
    if base:
        brates = report("BASELINE_BIN", base)
        print(f"this build / BASELINE_BIN, same backlog, back to back: {sum(rates)/len(rates) / (sum(brates)/len(brates)):.2f}x "
              f"(mean of {len(rates)} drains each), {max(rates)/max(brates):.2f}x (fastest of each: load only slows a drain); "
              f"CPU per reading A+B {sum(d['a_cpu_s']+d['b_cpu_s'] for d in ours)/sum(d['n'] for d in ours)*1e6:.0f} us vs "
              f"{sum(d['a_cpu_s']+d['b_cpu_s'] for d in base)/sum(d['n'] for d in base)*1e6:.0f} us; "
              f"first reading stored after {sum(d.get('first_s', 0) for d in ours)/len(ours):.2f} vs {sum(d.get('first_s', 0) for d in base)/len(base):.2f} s (mean)")
    rate = sum(rates) / len(rates)
    print(f"mosquitto persistent-session backlog: {md['n']} messages in {md['seconds']:.2f} s = {mrate:.0f} msg/s, verifying nothing ({la('mosq-drain')}); drain / mosquitto = {rate/mrate:.2f}")
EOF
