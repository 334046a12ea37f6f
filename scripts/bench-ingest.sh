#!/usr/bin/env bash
# Ingestion benchmark (issue 3): QoS 1 ingestion through `bridge run`, which
# signs and fsyncs every reading, against mosquitto as a plain broker, with
# the same load in the same run: 10 publishers, 200-byte JSON, 1 subscriber
# on the local broker.
#
#   scripts/bench-ingest.sh            # 10 s per scenario
#   DURATION=30s scripts/bench-ingest.sh
#   BASELINE_BIN=/path/to/old/bridge scripts/bench-ingest.sh  # + that binary at 2,000/s and max, same run
#   GO_TRACE=1 TRACE_DIR=/tmp/t scripts/bench-ingest.sh
#       # this build's 2,000 msg/s run serves /debug/pprof/ (http.debug_pprof) and keeps in /tmp/t
#       # a 5 s runtime/trace from 3 s into the load (go tool trace), the block and mutex profiles
#       # at its end and every reading's PUBACK timeline (mqttload -timeline)
#   PPROF_DIR=/tmp/p scripts/bench-ingest.sh
#       # every max-load bridge run (this build's and BASELINE_BIN's) serves /debug/pprof/ and keeps
#       # in /tmp/p a 5 s CPU profile from 2 s into the load and heap profiles at the load's start
#       # and end: go tool pprof -sample_index=alloc_space -base bridge-max-allocs0.pb.gz
#       # bridge-max-allocs.pb.gz is what the load allocated
#
# Every bridge run also reports the heap bytes and objects allocated and the GC cycles run per
# acked reading during the load (the Go runtime's counters in /metrics): unlike rates, these
# hardly move with the machine's load.
#
# Scenarios per broker: "max" (as fast as PUBACKs allow, 64 in flight per
# publisher) and "2000" (paced at 2,000 msg/s). For the bridge it also
# reports peak RSS (VmHWM) and disk bytes written per reading
# (/proc/PID/io write_bytes) against the size of the signed message and
# against the physical limit at the readings per synced commit it reached:
# BenchmarkFsync (storage/) measures, in the same run, the disk's sync
# latency (the floor of a PUBACK) and the bytes one synced commit writes
# (a partly filled 4 KiB page rewritten), so a commit of R readings of W
# WAL bytes each cannot write less than (page + R*W)/R per reading.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
MOSQ_PORT=${MOSQ_PORT:-18831}
BRIDGE_PORT=${BRIDGE_PORT:-18832}
HTTP_PORT=${HTTP_PORT:-18833}
# GOMEMLIMIT for the bridge; empty: the config's memory_limit (the default a user gets) applies.
BRIDGE_GOMEMLIMIT=${BRIDGE_GOMEMLIMIT:-}

source scripts/bench-lib.sh
bench_setup
ensure_mosquitto
build_tools
bridge_config "$work/bridge.toml" "$work/state" "$BRIDGE_PORT" "$HTTP_PORT" "[overlay]
enabled = false"

# tracing SCENARIO: whether GO_TRACE asks for this scenario's trace.
tracing() { [ -n "${GO_TRACE:-}" ] && [ "$1" = 2000 ]; }
# profiling SCENARIO: whether PPROF_DIR asks for this scenario's profiles.
profiling() { [ -n "${PPROF_DIR:-}" ] && [[ "$1" = max || "$1" = baseline-max ]]; }
if [ -n "${GO_TRACE:-}" ]; then
	[ -n "${TRACE_DIR:-}" ] || { echo "GO_TRACE needs TRACE_DIR" >&2; exit 2; }
	mkdir -p "$TRACE_DIR"
fi
[ -z "${PPROF_DIR:-}" ] || mkdir -p "$PPROF_DIR"
sed 's/^\[http\]$/[http]\ndebug_pprof = true/' "$work/bridge.toml" >"$work/bridge-trace.toml"

# go_counters FILE: the bridge's allocation and GC counters as JSON fields.
go_counters() {
	curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | awk '
		/^go_memstats_alloc_bytes_total / {b=$2} /^go_memstats_mallocs_total / {o=$2} /^go_gc_duration_seconds_count / {g=$2}
		END {printf "{\"alloc_bytes\": %s, \"mallocs\": %s, \"gcs\": %s}\n", b, o, g}' >"$1"
}

# pending_readings: readings the bridge stored and has not signed yet.
pending_readings() {
	curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^tributary_storage_pending_readings / {printf "%d", $2}'
}

run_bridge() { # scenario rate [binary]
	rm -rf "$work/state"
	local config=$work/bridge.toml timeline=()
	if tracing "$1"; then config=$work/bridge-trace.toml timeline=(-timeline "$TRACE_DIR/bridge-$1-timeline.csv"); fi
	if profiling "$1"; then config=$work/bridge-trace.toml; fi
	GOMEMLIMIT=$BRIDGE_GOMEMLIMIT "${3:-$work/bridge}" run --config "$config" 2>"$work/bridge-$1.log" & local pid=$!
	pids+=("$pid")
	wait_port "$BRIDGE_PORT"
	local before; before=$(write_bytes "$pid")
	note_load "bridge-$1" start
	if profiling "$1"; then curl -fsS -o "$PPROF_DIR/bridge-$1-allocs0.pb.gz" "http://127.0.0.1:$HTTP_PORT/debug/pprof/allocs"; fi
	go_counters "$work/bridge-$1-go0.json"
	"$work/mqttload" -broker "127.0.0.1:$BRIDGE_PORT" -rate "$2" -duration "$DURATION" "${timeline[@]}" >"$work/bridge-$1.json" & local load=$!
	if profiling "$1"; then
		sleep 2
		curl -fsS -o "$PPROF_DIR/bridge-$1-cpu.pb.gz" "http://127.0.0.1:$HTTP_PORT/debug/pprof/profile?seconds=5"
	fi
	if tracing "$1"; then
		sleep 3
		curl -fsS -o "$TRACE_DIR/bridge-$1.trace" "http://127.0.0.1:$HTTP_PORT/debug/pprof/trace?seconds=5"
		for p in block mutex; do curl -fsS -o "$TRACE_DIR/bridge-$1-$p.pb.gz" "http://127.0.0.1:$HTTP_PORT/debug/pprof/$p"; done
	fi
	wait "$load"
	go_counters "$work/bridge-$1-go1.json"
	if profiling "$1"; then
		curl -fsS -o "$PPROF_DIR/bridge-$1-allocs.pb.gz" "http://127.0.0.1:$HTTP_PORT/debug/pprof/allocs"
		cp "${3:-$work/bridge}" "$PPROF_DIR/bridge-$1.bin" # pprof needs the binary's symbols
	fi
	note_load "bridge-$1" end
	sleep 2 # let the signer and storage settle before reading the counters
	# Readings stored pending (the presigner declined: a slow signer) are
	# signed in the background after the load: wait for them, so that the
	# export, the disk bytes and the CPU include their signing.
	local lag=2
	until [ "$(pending_readings)" = 0 ] || [ "$lag" -ge 120 ]; do sleep 1; lag=$((lag + 1)); done
	local after; after=$(write_bytes "$pid")
	local hwm; hwm=$(peak_rss_kb "$pid")
	local smaps; smaps=$(rss_split_kb "$pid")
	curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >"$work/bridge-$1.metrics"
	local commits; commits=$(awk '/^tributary_storage_commits_total / {print $2}' "$work/bridge-$1.metrics")
	local addr; addr=$("$work/bridge" key show --config "$work/bridge.toml" | cut -d' ' -f1)
	local bytes=0 count=0
	for i in $(seq 0 9); do
		"$work/bridge" export --config "$work/bridge.toml" --stream "$addr/bench/p$i" -o "$work/export.raw"
		bytes=$((bytes + $(stat -c %s "$work/export.raw")))
		count=$((count + $(python3 -c 'import sys,struct
d=open(sys.argv[1],"rb").read(); n=i=0
while i<len(d): i+=4+struct.unpack(">I",d[i:i+4])[0]; n+=1
print(n)' "$work/export.raw")))
	done
	echo "{\"write_bytes\": $((after - before)), \"vmhwm_kb\": $hwm, $smaps, \"commits\": ${commits:-0}, \"export_bytes\": $bytes, \"export_count\": $count, \"sign_lag_s\": $lag}" >"$work/bridge-$1-proc.json"
	kill "$pid"; wait "$pid" 2>/dev/null || true
}

# run_fsync NAME: the disk's synced-commit floor (BenchmarkFsync) as JSON.
run_fsync() {
	note_load "fsync-$1" start
	go test -run '^$' -bench '^BenchmarkFsync$' -benchtime 2000x ./storage/ | python3 -c '
import json, re, sys
for line in sys.stdin:
    if line.startswith("BenchmarkFsync"):
        f = line.split()
        print(json.dumps({f[i + 1]: float(f[i]) for i in range(2, len(f) - 1, 2)}))
' >"$work/fsync-$1.json"
	note_load "fsync-$1" end
}

echo "running: duration $DURATION per scenario, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)" >&2
run_fsync before
run_mosquitto max 0 "$MOSQ_PORT"
run_bridge max 0
run_mosquitto 2000 2000 "$MOSQ_PORT"
run_bridge 2000 2000
if [ -n "${BASELINE_BIN:-}" ]; then # before/after in the same run
	cp "$BASELINE_BIN" "$work/bridge-baseline"
	run_bridge baseline-2000 2000 "$work/bridge-baseline"
	run_bridge baseline-max 0 "$work/bridge-baseline"
fi
run_fsync after

python3 - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
def load(name): return json.load(open(f"{w}/{name}.json"))
def la(name):
    l = load(f"load-{name}")
    return f"load {l['start']:.1f}-{l['end']:.1f}"
print("| scenario | broker | acked msg/s | recv msg/s | PUBACK p50 ms | PUBACK p99 ms | e2e p99 ms | failed | load |")
print("|---|---|---|---|---|---|---|---|---|")
for sc in ("max", "2000"):
    for b in ("mosquitto", "bridge"):
        r = load(f"{b}-{sc}")
        print(f"| {sc} | {b} | {r['ack_rate']:.0f} | {r['recv_rate']:.0f} | {r['ack_p50_ms']:.2f} | {r['ack_p99_ms']:.2f} | {r['e2e_p99_ms']:.2f} | {r['failed']} | {la(b + '-' + sc)} |")
m, b = load("mosquitto-max"), load("bridge-max")
print(f"\nthroughput ratio bridge/mosquitto (max): {b['ack_rate']/m['ack_rate']:.2f} (target >= 1.0; {la('bridge-max')}, mosquitto {la('mosquitto-max')})")
m2, b2 = load("mosquitto-2000"), load("bridge-2000")
fs = [load("fsync-before"), load("fsync-after")]
fsync_p99 = max(f["p99-µs"] for f in fs) / 1e3
page = max(f["written-B/sync"] for f in fs)
print(f"disk floor (BenchmarkFsync, 512 B per synced commit): sync p50 {fs[0]['p50-µs']/1e3:.2f} / {fs[1]['p50-µs']/1e3:.2f} ms, "
      f"p99 {fs[0]['p99-µs']/1e3:.2f} / {fs[1]['p99-µs']/1e3:.2f} ms, {fs[0]['written-B/sync']:.0f} / {fs[1]['written-B/sync']:.0f} B written per sync "
      f"(before / after the runs; {la('fsync-before')}, {la('fsync-after')})")
print(f"PUBACK p99 at 2,000 msg/s: bridge {b2['ack_p99_ms']:.2f} ms = {b2['ack_p99_ms']/2:.2f}x the 2 ms target, "
      f"{b2['ack_p99_ms']/max(m2['ack_p99_ms'],0.01):.1f}x mosquitto's {m2['ack_p99_ms']:.2f} ms, "
      f"{b2['ack_p99_ms']/max(fsync_p99,0.001):.1f}x the disk's sync p99 {fsync_p99:.2f} ms; "
      f"p50 {b2['ack_p50_ms']:.2f} ms = {b2['ack_p50_ms']/max(m2['ack_p50_ms'],0.01):.1f}x mosquitto's {m2['ack_p50_ms']:.2f} ms")
def quantiles(name, metric):
    """p50 and p99 (ms) of a Prometheus histogram in the bridge's metrics, interpolated in its buckets."""
    buckets = []
    for line in open(f"{w}/bridge-{name}.metrics"):
        if line.startswith(metric + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0
    def q(f):
        prev_le, prev_n = 0.0, 0.0
        for le, n in buckets:
            if n >= f * total and total > 0:
                if le == float("inf"):
                    return prev_le * 1e3
                return (prev_le + (le - prev_le) * (f * total - prev_n) / max(n - prev_n, 1)) * 1e3
            prev_le, prev_n = le, n
        return float("nan")
    return q(0.5), q(0.99)
# Where a PUBACK's time goes: in storage (queued -> synced commit, the
# commit window, signing in the commit and the commit before it included)
# against what the client measured; the rest is the broker's read path, the
# ack queue and the write back.
for sc in ("max", "2000"):
    r = load(f"bridge-{sc}")
    d50, d99 = quantiles(sc, "tributary_storage_durable_wait_seconds")
    c50, c99 = quantiles(sc, "tributary_storage_commit_seconds")
    print(f"bridge {sc} PUBACK stages: storage wait (queued -> durable) p50 {d50:.2f} / p99 {d99:.2f} ms, one commit p50 {c50:.2f} / p99 {c99:.2f} ms; "
          f"PUBACK p50 {r['ack_p50_ms']:.2f} / p99 {r['ack_p99_ms']:.2f} ms at the client: broker and ack path ~{r['ack_p50_ms'] - d50:.2f} / {r['ack_p99_ms'] - d99:.2f} ms")
import os
scenarios = ["max", "2000"] + (["baseline-2000", "baseline-max"] if os.path.exists(f"{w}/bridge-baseline-2000.json") else [])
alloc = {}
for sc in scenarios:
    r, p = load(f"bridge-{sc}"), load(f"bridge-{sc}-proc")
    signed = (p["export_bytes"] - 4 * p["export_count"]) / max(p["export_count"], 1)
    per = p["write_bytes"] / max(r["acked"], 1)
    rpc = r['acked'] / max(p['commits'], 1)
    # WAL bytes of one reading: the signed message in its log entry (key,
    # part, reading number, entry header, checksum: ~40 B) and its index
    # entry (~85 B), storage/keys.go.
    wal = signed + 125
    limit = page / rpc + wal
    print(f"bridge {sc}: peak RSS {p['vmhwm_kb']/1024:.1f} MB = {p['vmhwm_kb']/1024/64:.2f}x the 64 MB target "
          f"(at the end: anon {p['anon_kb']/1024:.1f} MB, file {p['file_kb']/1024:.1f} MB); "
          f"disk written {per:.0f} B/reading; signed message {signed:.0f} B; ratio {per/signed:.2f}x (target <= 3); "
          f"{rpc:.1f} readings per synced commit; physical limit there (WAL only: {page:.0f} B page / {rpc:.1f} + {wal:.0f} B) "
          f"{limit:.0f} B = {limit/signed:.2f}x the signed message, bridge = {per/limit:.2f}x the limit; "
          f"exported {p['export_count']} of {r['acked']} acked; {la('bridge-' + sc)}")
    batches = {l.split('stored="')[1].split('"')[0]: float(l.split()[-1]) for l in open(f"{w}/bridge-{sc}.metrics")
               if l.startswith("tributary_storage_batches_total{")}
    unsigned = sum(v for k, v in batches.items() if k != "presigned")
    print(f"bridge {sc}: signed in the commit that made them durable: {batches.get('presigned', 0):.0f} of {sum(batches.values()):.0f} batches; "
          f"{unsigned:.0f} stored pending and signed afterwards (the presigner declined a slow batch); every reading signed "
          f"{p['sign_lag_s']} s after the load ended (disk and CPU figures include that)")
    cpu = next((float(l.split()[1]) for l in open(f"{w}/bridge-{sc}.metrics") if l.startswith("process_cpu_seconds_total ")), 0)
    print(f"bridge {sc}: CPU {cpu * 1e6 / max(r['acked'], 1):.0f} µs per acked reading (process total, start-up included; less sensitive to the machine's load than rates)")
    g0, g1 = load(f"bridge-{sc}-go0"), load(f"bridge-{sc}-go1")
    alloc[sc] = [(g1[k] - g0[k]) / max(r["acked"], 1) for k in ("alloc_bytes", "mallocs", "gcs")]
    print(f"bridge {sc}: during the load, per acked reading: {alloc[sc][0]:.0f} B and {alloc[sc][1]:.1f} objects allocated, "
          f"{alloc[sc][2] * 1000:.2f} GC cycles per 1,000 ({g1['gcs'] - g0['gcs']:.0f} cycles)")
    if sc.startswith("baseline-") and sc[len("baseline-"):] in alloc:
        mine = alloc[sc[len("baseline-"):]]
        print(f"{sc}: this build / baseline: allocated bytes per reading {mine[0] / max(alloc[sc][0], 1):.2f}, "
              f"objects {mine[1] / max(alloc[sc][1], 1):.2f}, GC cycles {mine[2] / max(alloc[sc][2], 1e-9):.2f}")
    if sc == "baseline-max":
        print(f"baseline max: {r['ack_rate']:.0f} msg/s, {r['ack_rate']/m['ack_rate']:.2f}x mosquitto; this build / baseline: "
              f"throughput {b['ack_rate']/max(r['ack_rate'], 1):.2f} ({la('bridge-max')} / {la('bridge-baseline-max')})")
    if sc == "baseline-2000":
        print(f"baseline 2000: PUBACK p50 {r['ack_p50_ms']:.2f} ms, p99 {r['ack_p99_ms']:.2f} ms "
              f"({r['ack_p99_ms']/max(m2['ack_p99_ms'],0.01):.1f}x mosquitto's); this build / baseline: "
              f"disk per reading {(load('bridge-2000-proc')['write_bytes']/max(b2['acked'],1))/per:.2f}, "
              f"peak RSS {load('bridge-2000-proc')['vmhwm_kb']/p['vmhwm_kb']:.2f}, PUBACK p99 {b2['ack_p99_ms']/max(r['ack_p99_ms'],0.01):.2f}")
EOF
