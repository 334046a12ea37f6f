#!/usr/bin/env bash
# Builds the Tributary gateway SD-card image for Raspberry Pi 3/4 (arm64) from Debian bookworm packages.
#
#   firmware-image/build.sh [--bridge FILE] [--out DIR] [--no-compress]
#
# Stages (each is a function below):
#   base       mmdebstrap root filesystem with kernel, firmware and initramfs; cached in $OUT/cache, keyed on
#              packages.txt, this script's base stage and the mirror, because it takes ~10 min under qemu-user
#   customize  host-side only (no emulation): bridge binary, unit, users, first-boot units, fstab
#   assemble   MBR image from FAT + ext4 filesystem images, without loop devices or mounts
#   compress   xz for publishing
# Needs root (mmdebstrap --mode=root, file ownership) and binfmt_misc. Installs missing host packages with apt-get.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=firmware-image/lib.sh
. "$HERE/lib.sh"

OUT=$HERE/out
# The base root filesystem depends only on the package list and mirror, so it
# may be cached outside the checkout and shared by clones on one machine.
CACHE=${TRIBUTARY_IMAGE_CACHE:-}
BRIDGE=""
COMPRESS=1
SUITE=bookworm
while (($#)); do
	case $1 in
	--bridge) BRIDGE=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--no-compress) COMPRESS=0; shift ;;
	*) die "unknown argument: $1" ;;
	esac
done
[ "$(id -u)" = 0 ] || die "must run as root"

VERSION=${VERSION:-$(git -C "$REPO" describe --tags --always --dirty 2>/dev/null || echo dev)}
# One timestamp for every file and filesystem in the image, so two builds from the same commit and
# package versions differ as little as Debian allows.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
MIRROR=${MIRROR:-$(host_mirror debian)}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(host_mirror debian-security)}
IMAGE=$OUT/tributary-$VERSION-rpi-arm64.img
WORK=$OUT/work
ROOT=$WORK/rootfs

# Partition sizes in MiB. The data partition starts small and is grown to fill the card on first boot.
BOOT_MB=256
ROOT_MB=1280
DATA_MB=64

packages() { grep -v -e '^#' -e '^$' "$HERE/packages.txt"; }

# base_stage builds (or reuses) the cached base root filesystem tarball and prints its path.
base_stage() {
	local key tar
	key=$({ packages; declare -f base_mmdebstrap; echo "$SUITE $MIRROR $SECURITY_MIRROR"; } | sha256sum | cut -c1-16)
	tar=${CACHE:-$OUT/cache}/base-$SUITE-arm64-$key.tar
	if [ -s "$tar" ]; then
		log "base rootfs: reusing $tar"
	else
		mkdir -p "${CACHE:-$OUT/cache}"
		log "base rootfs: building $tar (about 10 min under qemu-user)"
		base_mmdebstrap "${tar%.tar}.partial.tar"
		mv "${tar%.tar}.partial.tar" "$tar"
	fi
	echo "$tar"
}

# base_mmdebstrap runs mmdebstrap. update-initramfs is diverted to /bin/true while packages are installed and
# run once at the end: each run takes 6-10 min under qemu-user, and the kernel and firmware packages would
# otherwise trigger it twice. ROOTPART and CONSOLES must be set before that run, because the raspi-firmware
# hook writes them into /boot/firmware/cmdline.txt.
base_mmdebstrap() {
	local tar=$1 components="main non-free-firmware"
	# shellcheck disable=SC2016 # the hooks' $1 is the chroot directory, expanded by mmdebstrap
	mmdebstrap --mode=root --format=tar --variant=minbase --architectures=arm64 \
		--components="$components" \
		--include="$(packages | paste -sd,)" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
		--essential-hook='ln -s /bin/true "$1/usr/sbin/update-initramfs"' \
		--customize-hook='rm "$1/usr/sbin/update-initramfs"' \
		--customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
		--customize-hook='printf "%s\n" "ROOTPART=LABEL=RASPIROOT" "CONSOLES=\"tty0 ttyS1,115200\"" >"$1/etc/default/raspi-firmware"' \
		--customize-hook='chroot "$1" update-initramfs -c -k all' \
		"$SUITE" "$tar" \
		"deb $MIRROR $SUITE $components" \
		"deb $MIRROR $SUITE-updates $components" \
		"deb $SECURITY_MIRROR $SUITE-security $components"
}

# bridge_binary prints the arm64 bridge binary to put in the image, cross-compiling it unless --bridge was given.
bridge_binary() {
	if [ -n "$BRIDGE" ]; then
		realpath "$BRIDGE"
		return
	fi
	local bin=$WORK/bridge-linux-arm64
	# As it ships: static with cgo (scripts/build.sh); its progress goes to stderr, the path to stdout.
	LDFLAGS_EXTRA="-X main.version=$VERSION" "$REPO/scripts/build.sh" arm64 "$bin" >&2
	echo "$bin"
}

# customize turns the base tarball into the image's root tree in $ROOT. Only the .deb install runs arm64
# code (its postinst, under qemu-user, a few seconds); everything else is file copies on the host.
customize() {
	local base=$1 bridge=$2 deb
	rm -rf "$WORK/rootfs" "$WORK/data" "$WORK/bootfs"
	mkdir -p "$ROOT"
	tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"

	# The gateway itself comes from the same .deb that Raspberry Pi OS users install.
	deb=$("$REPO/packaging/build-deb.sh" arm64 "$bridge" "$WORK")
	cp "$deb" "$ROOT/tmp/tributary.deb"
	chroot "$ROOT" dpkg --install /tmp/tributary.deb >/dev/null
	rm "$ROOT/tmp/tributary.deb"

	(cd "$HERE/rootfs" && tar --owner=0 --group=0 --numeric-owner -cf - .) | tar -C "$ROOT" -xpf -
	systemctl --root="$ROOT" --quiet enable systemd-networkd.service systemd-resolved.service \
		systemd-timesyncd.service tributary-firstboot.service tributary-growdata.service
	# Wi-Fi: one wpa_supplicant per interface, started when wlan0 appears, instead of Debian's D-Bus one.
	systemctl --root="$ROOT" --quiet disable wpa_supplicant.service
	mkdir -p "$ROOT/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
	ln -sf /lib/systemd/system/wpa_supplicant@.service \
		"$ROOT/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"
	ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
	# A headless gateway must never stop at boot to prompt for a locale or root password.
	ln -sf /dev/null "$ROOT/etc/systemd/system/systemd-firstboot.service"
	# I2C on the header pins for secure elements; kept across kernel updates by raspi-firmware's hook.
	echo "dtparam=i2c_arm=on" >"$ROOT/etc/default/raspi-firmware-custom"
	cat "$ROOT/etc/default/raspi-firmware-custom" >>"$ROOT/boot/firmware/config.txt"

	# Per-device identity is created at first boot; an image must not carry any.
	rm -f "$ROOT"/etc/ssh/ssh_host_*
	: >"$ROOT/etc/machine-id"
	rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/var/lib/systemd/random-seed"
	# Build-time logs (dpkg.log carries wall-clock times) would differ per build and are hidden under the
	# /var/log tmpfs at run time anyway.
	find "$ROOT/var/log" -type f -delete
	mkdir -p "$ROOT/data" "$ROOT/var/lib/tributary"
	sed -i -e 's/\brw\b/ro/' "$ROOT/boot/firmware/cmdline.txt"

	# Record what went in: Debian gives no snapshot pin on this mirror, so the exact package list is the
	# reproducibility record (also copied to the boot partition).
	mkdir -p "$ROOT/usr/share/tributary"
	{
		echo "# Tributary image $VERSION, Debian $SUITE arm64, built $(date -u -d "@$SOURCE_DATE_EPOCH" +%FT%TZ) from $MIRROR"
		dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n' | LC_ALL=C sort
	} >"$ROOT/usr/share/tributary/packages.txt"

	data_tree
	boot_tree
}

# data_tree prepares the data partition's contents: the gateway's state directory, owned by its user,
# and /var/lib/systemd, moved off the read-only root so systemd can keep its state there.
data_tree() {
	local owner
	owner=$(awk -F: '$1 == "tributary" {print $3 ":" $4}' "$ROOT/etc/passwd")
	[ -n "$owner" ] || die "user tributary missing in the image"
	install -d -m 0755 "$WORK/data"
	install -d -m 0700 -o "${owner%:*}" -g "${owner#*:}" "$WORK/data/tributary"
	cp -a "$ROOT/var/lib/systemd" "$WORK/data/systemd"
	find "$ROOT/var/lib/systemd" -mindepth 1 -delete
}

# boot_tree moves /boot/firmware out of the root tree, adding the user-facing files.
boot_tree() {
	mv "$ROOT/boot/firmware" "$WORK/bootfs"
	mkdir -p "$ROOT/boot/firmware"
	cp "$HERE"/boot/* "$WORK/bootfs/"
	cp "$ROOT/usr/share/tributary/packages.txt" "$WORK/bootfs/tributary-packages.txt"
	echo "$VERSION" >"$WORK/bootfs/tributary-version.txt"
}

# assemble writes $IMAGE: MBR with FAT32 boot (p1), ext4 root (p2) and ext4 data (p3, last so it can grow).
# Filesystems are built as files and copied in with dd: no loop devices, no mounts.
assemble() {
	local seed uuid_root uuid_data root_need
	seed=$(printf '%s' "$VERSION$SOURCE_DATE_EPOCH" | sha256sum)
	uuid_root=$(echo "$seed" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
	uuid_data=$(echo "$seed" | cut -c33-64 | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
	root_need=$(($(du -sm "$ROOT" | cut -f1) * 13 / 10))
	[ "$root_need" -le "$ROOT_MB" ] || die "root tree needs ${root_need} MiB, more than ROOT_MB=$ROOT_MB"
	find "$ROOT" "$WORK/data" "$WORK/bootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH

	rm -f "$WORK"/*.fs
	mkfs.vfat -C -F 32 -n RASPIFIRM -i "${seed:0:8}" --invariant "$WORK/boot.fs" $((BOOT_MB * 1024)) >/dev/null
	mcopy -s -m -i "$WORK/boot.fs" "$WORK/bootfs"/* ::
	mkfs.ext4 -q -L RASPIROOT -U "$uuid_root" -E "hash_seed=$uuid_root" -d "$ROOT" "$WORK/root.fs" "${ROOT_MB}M"
	mkfs.ext4 -q -L TRIBDATA -U "$uuid_data" -E "hash_seed=$uuid_data" -m 1 -d "$WORK/data" "$WORK/data.fs" "${DATA_MB}M"

	local p1=4 p2 p3 total
	p2=$((p1 + BOOT_MB))
	p3=$((p2 + ROOT_MB))
	total=$((p3 + DATA_MB))
	rm -f "$IMAGE"
	truncate -s "${total}M" "$IMAGE"
	sfdisk --quiet "$IMAGE" <<-SFDISK
		label: dos
		label-id: 0x${seed:8:8}
		start=${p1}MiB, size=${BOOT_MB}MiB, type=c, bootable
		start=${p2}MiB, size=${ROOT_MB}MiB, type=83
		start=${p3}MiB, size=${DATA_MB}MiB, type=83
	SFDISK
	dd if="$WORK/boot.fs" of="$IMAGE" bs=1M seek="$p1" conv=notrunc,sparse status=none
	dd if="$WORK/root.fs" of="$IMAGE" bs=1M seek="$p2" conv=notrunc,sparse status=none
	dd if="$WORK/data.fs" of="$IMAGE" bs=1M seek="$p3" conv=notrunc,sparse status=none
	rm -f "$WORK"/*.fs
}

main() {
	install_missing mmdebstrap arch-test qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs xz-utils
	enable_binfmt
	local t0=$SECONDS t base bridge
	STEPS=4
	if [ "${BASE_ONLY:-0}" = 1 ]; then STEPS=1; elif [ "$COMPRESS" = 1 ]; then STEPS=5; fi
	step "base root file system (mmdebstrap, cached by package list)"
	base=$(base_stage)
	log "base stage done in $((SECONDS - t0)) s"
	if [ "${BASE_ONLY:-0}" = 1 ]; then return; fi
	mkdir -p "$WORK"
	t=$SECONDS
	step "bridge binary and .deb"
	bridge=$(bridge_binary)
	step "customize: install the .deb, configure the system"
	customize "$base" "$bridge"
	log "customize done in $((SECONDS - t)) s"
	t=$SECONDS
	step "assemble the partitions into $IMAGE"
	assemble
	log "image $IMAGE ($(du -m --apparent-size "$IMAGE" | cut -f1) MiB, $(du -m "$IMAGE" | cut -f1) MiB allocated) in $((SECONDS - t)) s"
	if [ "$COMPRESS" = 1 ]; then
		t=$SECONDS
		step "compress (xz)"
		xz -T2 -6 -f -k "$IMAGE"
		log "compressed $IMAGE.xz ($(du -m "$IMAGE.xz" | cut -f1) MiB) in $((SECONDS - t)) s"
	fi
	log "total $((SECONDS - t0)) s"
	echo "$IMAGE"
}

main
