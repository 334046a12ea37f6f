# Shared parts of the benchmark scripts; sourced, not run.

# bench_setup makes the scratch directory $work and the list $pids of
# processes to stop on exit.
bench_setup() {
	# Everything is built as it ships (scripts/build.sh: static, with
	# cgo, so signatures go through libsecp256k1), and the limits'
	# benchmarks run the same crypto. CGO_ENABLED=0 measures the pure-Go
	# fallback (3.6x slower to verify: BENCHMARKS.md, Session 9) on purpose.
	export CGO_ENABLED=${CGO_ENABLED:-1}
	work=$(mktemp -d)
	pids=()
	trap bench_cleanup EXIT
}

bench_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}

ensure_mosquitto() {
	if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
		local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
		$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto
	fi
	if ! command -v mosquitto_sub >/dev/null; then # the overlay drain benchmark's persistent subscriber
		local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
		$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto-clients
	fi
	if ! command -v curl >/dev/null; then # the benchmarks read the bridges' metrics (and profiles)
		local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
		$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq curl
	fi
	MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
}

# build_tools builds the bridge, or takes BRIDGE_BIN if set (a before/after
# comparison runs the script once with each binary), and the load generator.
build_tools() {
	if [ -n "${BRIDGE_BIN:-}" ]; then cp "$BRIDGE_BIN" "$work/bridge"; else scripts/build.sh native "$work/bridge"; fi
	echo "bridge built with CGO_ENABLED=$CGO_ENABLED (BRIDGE_BIN and BASELINE_BIN: as they were built)"
	go build -o "$work/mqttload" ./bench/mqttload
}

wait_port() {
	for _ in $(seq 400); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "port $1 did not open" >&2
	return 1
}

# run_mosquitto NAME RATE PORT: mosquitto as a plain broker with the settings
# that favour it (no Nagle delay; queues large enough that it does not drop
# QoS 1 messages for a slow subscriber), loaded like the bridge.
run_mosquitto() {
	cat >"$work/mosquitto.conf" <<CONF
listener $3 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
max_queued_messages 1000000
log_dest none
CONF
	"$MOSQUITTO" -c "$work/mosquitto.conf" & local pid=$!
	wait_port "$3"
	note_load "mosquitto-$1" start
	"$work/mqttload" -broker "127.0.0.1:$3" -rate "$2" -duration "$DURATION" >"$work/mosquitto-$1.json"
	note_load "mosquitto-$1" end
	kill "$pid"; wait "$pid" 2>/dev/null || true
}

# note_load NAME start|end: the 1-minute load average when scenario NAME
# starts or ends, in $work/load-NAME.json; the reports print it beside each
# figure (the machine is shared, so every figure needs its load).
note_load() {
	local f="$work/load-$1.json" l; l=$(cut -d' ' -f1 /proc/loadavg)
	if [ "$2" = start ]; then echo "{\"start\": $l" >"$f"; else echo ", \"end\": $l}" >>"$f"; fi
}

# bridge_config FILE STATE MQTT_PORT HTTP_PORT [EXTRA]: a bench bridge config.
# BATCH_WINDOW, if set, overrides [signing] batch_window; COMMIT_WINDOW
# overrides [storage] commit_window; DEBUG_PPROF=1 sets [http] debug_pprof;
# LOG_LEVEL sets [log] level (default info).
bridge_config() {
	local signing="" storage=""
	[ -z "${BATCH_WINDOW:-}" ] || signing="[signing]
batch_window = \"$BATCH_WINDOW\""
	[ -z "${COMMIT_WINDOW:-}" ] || storage="[storage]
commit_window = \"$COMMIT_WINDOW\""
	cat >"$1" <<CONF
state_dir = "$2"
[log]
level = "${LOG_LEVEL:-info}"
[[mqtt.listener]]
type = "tcp"
address = "127.0.0.1:$3"
[http]
address = "127.0.0.1:$4"
${DEBUG_PPROF:+debug_pprof = true}
[websocket]
address = ""
${5:-}
$signing
$storage
CONF
}

write_bytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
peak_rss_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# rss_split_kb PID: resident anonymous and file-backed memory as JSON fields.
rss_split_kb() {
	awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "\"anon_kb\": %d, \"file_kb\": %d", a, f}' "/proc/$1/status"
}
