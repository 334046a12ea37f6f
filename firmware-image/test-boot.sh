#!/usr/bin/env bash
# Boot test of the gateway image: builds it (unless IMAGE=… names one; BRIDGE=… names a prebuilt arm64
# binary), puts a bridge.toml, an SSH key and 1 GiB of free space on a copy, boots it in
# qemu-system-aarch64 -M virt (TCG) with user networking forwarded to 127.0.0.1 only, and checks that
#   - the first-boot settings were applied (config, SSH on, data partition grown, / read-only),
#   - bridge.service reached READY (active/running; Type=notify) and the system is "running",
#   - MQTT on the forwarded port takes a QoS 1 publish (PUBACK),
#   - `bridge export` in the guest returns that reading, correctly signed by the gateway's address,
#     which was also written back to the boot partition;
# then powers the guest off, puts a broken bridge.toml and a wifi.txt on the card, boots again and checks
# that the old configuration stays, Wi-Fi is configured, and key and readings survived the reboot.
# Exit status 0 means pass. Build and boot times go to stdout and $OUT/test-boot-times.txt.
# Needs root (see build.sh); installs qemu-system-arm and mtools when missing.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=firmware-image/lib.sh
. "$HERE/lib.sh"
OUT=${OUT:-$HERE/out}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-600} # seconds; TCG emulation on a loaded 2-core host is slow
[ "$(id -u)" = 0 ] || die "must run as root"
install_missing qemu-system-arm ipxe-qemu mtools openssh-client

t_build=0
if [ -z "${IMAGE:-}" ]; then
	t=$SECONDS
	IMAGE=$("$HERE/build.sh" --out "$OUT" --no-compress ${BRIDGE:+--bridge "$BRIDGE"} | tail -n1)
	t_build=$((SECONDS - t))
fi
[ -f "$IMAGE" ] || die "no image at $IMAGE"

T=$OUT/test-boot
rm -rf "$T"
mkdir -p "$T"
QEMU_PID=""
cleanup() {
	if [ "${KEEP_VM:-0}" = 1 ]; then log "KEEP_VM=1: QEMU (pid $QEMU_PID) left running"; return; fi
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill "$QEMU_PID"; fi
}
trap cleanup EXIT

# free_port prints a TCP port nothing listens on at 127.0.0.1.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
}
MQTT_PORT=$(free_port)
SSH_PORT=$(free_port)

# The test copy: a larger "card", and the files a user would put on the boot partition.
cp --sparse=always "$IMAGE" "$T/card.img"
truncate -s +1G "$T/card.img"
FAT="$T/card.img@@4M"
cat >"$T/bridge.toml" <<'TOML'
# boot test configuration (firmware-image/test-boot.sh)
[mqtt]
allow_anonymous = true

[[mqtt.listener]]
type = "tcp"
address = "0.0.0.0:1883"

[[rule]]
topic = "boottest/+"
stream = "{address}/boottest/{1}"
TOML
ssh-keygen -q -t ed25519 -N '' -C boottest -f "$T/id_boottest"
cp "$T/id_boottest.pub" "$T/authorized_keys"
mcopy -o -i "$FAT" "$T/bridge.toml" "$T/authorized_keys" ::
# QEMU loads the image's own kernel and initramfs directly (the Pi's GPU firmware stage is not emulated).
kernel=$(mdir -b -i "$FAT" :: | sed -n 's|^::/||p' | { grep '^vmlinuz-' || true; } | sort -V | tail -n1)
[ -n "$kernel" ] || die "no vmlinuz-* on the boot partition"
mcopy -o -i "$FAT" "::$kernel" "$T/vmlinuz"
mcopy -o -i "$FAT" "::initrd.img-${kernel#vmlinuz-}" "$T/initrd.img"

go build -o "$T/boottest" "$REPO/firmware-image/boottest"

# boot_guest LOG: starts QEMU on the card with the console going to LOG.
boot_guest() {
	CONSOLE=$1
	log "booting $IMAGE copy (MQTT on 127.0.0.1:$MQTT_PORT, SSH on 127.0.0.1:$SSH_PORT, console $CONSOLE)"
	t_launch=$SECONDS
	qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -display none -no-reboot \
		-kernel "$T/vmlinuz" -initrd "$T/initrd.img" \
		-append "console=ttyAMA0 root=LABEL=RASPIROOT ro rootwait net.ifnames=0 systemd.wants=tributary-bootreport.service" \
		-drive "if=none,id=card,format=raw,file=$T/card.img" -device virtio-blk-pci,drive=card \
		-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$MQTT_PORT-:1883,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
		-device virtio-net-pci,netdev=net0 -device virtio-rng-pci \
		-serial "file:$CONSOLE" -pidfile "$T/qemu.pid" -daemonize
	QEMU_PID=$(cat "$T/qemu.pid")
}

# wait_for PATTERN: waits until the console shows a line matching PATTERN and prints it.
wait_for() {
	local deadline=$((t_launch + BOOT_TIMEOUT)) line
	while [ $SECONDS -lt $deadline ]; do
		if line=$(grep -a -m1 -E "$1" "$CONSOLE" 2>/dev/null); then
			echo "${line%$'\r'}"
			return 0
		fi
		kill -0 "$QEMU_PID" 2>/dev/null || break
		sleep 1
	done
	tail -n 60 "$CONSOLE" >&2 || true
	die "no console line matching '$1' within ${BOOT_TIMEOUT}s of launch"
}
report() { wait_for "BOOT-REPORT $1=" | sed "s/.*BOOT-REPORT $1=//"; }

failures=()
expect() { # expect WHAT GOT WANT-REGEX
	if [[ $2 =~ $3 ]]; then log "ok   $1: $2"; else log "FAIL $1: '$2' does not match '$3'"; failures+=("$1"); fi
}

# expect_running WHAT STATE: the system state must be running; otherwise the failed units' journal is
# printed, so that a failure that does not recur can still be read from the CI log.
expect_running() {
	expect "$1" "$2" '^running$'
	if [ "$2" != running ]; then
		guest 'systemctl --failed --no-legend --plain; for u in $(systemctl --failed --no-legend --plain | cut -d" " -f1); do journalctl -b -u "$u" --no-pager; done' >&2 || true
	fi
}

# `bridge export` runs inside the guest, over SSH with the key the boot partition enabled. The full path
# matters: root's PATH finds iproute2's /usr/sbin/bridge first.
guest() {
	ssh -q -i "$T/id_boottest" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o ConnectTimeout=30 -o BatchMode=yes root@127.0.0.1 "$@"
}

# publish_and_export PAYLOAD...: publishes the first payload with QoS 1, then checks that the guest's
# export holds every payload given, signed by the gateway.
publish_and_export() {
	local t=$SECONDS attempt p
	if "$T/boottest" publish -addr "127.0.0.1:$MQTT_PORT" -topic boottest/sensor1 -payload "$1"; then
		log "ok   QoS 1 publish acknowledged in $((SECONDS - t)) s"
	else
		failures+=("QoS 1 publish")
	fi
	rm -f "$T/export.b64"
	for attempt in 1 2 3 4 5 6; do
		if guest /usr/bin/bridge export --config /etc/tributary/bridge.toml --stream "$address/boottest/sensor1" -o /run/export.raw &&
			guest base64 -w0 /run/export.raw >"$T/export.b64" && [ -s "$T/export.b64" ]; then
			break
		fi
		log "export attempt $attempt returned nothing yet"
		sleep 5
	done
	for p in "$@"; do
		if "$T/boottest" verify -in "$T/export.b64" -payload "$p" -publisher "$address"; then
			log "ok   bridge export in the guest returned the signed reading $p"
		else
			failures+=("export of $p")
		fi
	done
}

# First boot: settings from the boot partition, key generation, partition growth.
boot_guest "$T/console1.log"
state=$(report state)
t_running=$((SECONDS - t_launch))
expect_running "system state" "$state"
expect "bridge.service (READY)" "$(report bridge)" '^active/running restarts=0$'
expect "boot partition bridge.toml applied" "$(report config)" '^applied$'
expect "root file system" "$(report root)" '^ro$'
expect "data partition grown (MiB)" "$(report data_mib)" '^(9[0-9][0-9]|1[0-9]{3})$'
expect "SSH on because authorized_keys was given" "$(report ssh)" '^active$'
expect "failed units" "$(report failed)" '^$'
address=$(report address)
expect "address written back to boot partition" "$address" '^0x[0-9a-f]{40}$'
banner=$(timeout 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT; head -c 7 <&3" 2>/dev/null || true)
expect "sshd answers on the forwarded port" "$banner" '^SSH-2.0'
payload1="{\"temperature\":21.5,\"boot\":1,\"n\":$RANDOM}"
publish_and_export "$payload1"
t_total=$((SECONDS - t_launch))

# Second boot, after the user edited the boot partition: a broken bridge.toml must leave the working
# configuration in place, Wi-Fi settings are applied, and the key and stored readings survive the reboot.
guest systemctl poweroff || true
for _ in $(seq 120); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
! kill -0 "$QEMU_PID" 2>/dev/null || die "guest did not power off within 120 s"
printf '[mqtt]\nallow_anonymous = "sometimes"\n' >"$T/bridge.toml"
printf 'ssid=BootTest\r\npsk=correct horse battery staple\r\ncountry=DE\r\n' >"$T/wifi.txt" # CRLF, as from Windows
mcopy -o -i "$FAT" "$T/bridge.toml" "$T/wifi.txt" ::
boot_guest "$T/console2.log"
expect_running "second boot: system state" "$(report state)"
t_running2=$((SECONDS - t_launch))
expect "second boot: bridge.service (READY)" "$(report bridge)" '^active/running restarts=0$'
expect "second boot: same gateway address" "$(report address)" "^$address\$"
expect "second boot: status file reports the rejected bridge.toml and the Wi-Fi settings" \
	"$(report status)" 'bridge.toml NOT applied.*Wi-Fi settings applied'
wpa=$(guest cat /etc/wpa_supplicant/wpa_supplicant-wlan0.conf | tr '\n' ' ')
expect "second boot: wpa_supplicant config with hashed PSK" "$wpa" 'country=DE.*ssid="BootTest".*psk=[0-9a-f]{64}'
expect "second boot: no plain-text passphrase stored" "$(guest grep -c 'battery' /etc/wpa_supplicant/wpa_supplicant-wlan0.conf || true)" '^0$'
publish_and_export "{\"temperature\":22.0,\"boot\":2}" "$payload1"
grep -a 'BOOT-REPORT status:' "$T/console1.log" | tr -d '\r' >"$T/bridge-status.txt" || true

{
	echo "test-boot $(date -u +%FT%TZ) $(basename "$IMAGE")"
	echo "  image build:                 ${t_build} s (0 = prebuilt image given)"
	echo "  first boot, launch to system running:  ${t_running} s"
	echo "  first boot, launch to export verified: ${t_total} s"
	echo "  second boot, launch to system running: ${t_running2} s"
} | tee -a "$OUT/test-boot-times.txt"
if ((${#failures[@]})); then
	tail -n 80 "$CONSOLE" >&2
	die "boot test failed: ${failures[*]}"
fi
log "PASS"
