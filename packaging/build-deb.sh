#!/usr/bin/env bash
# Builds the tributary .deb for one Debian architecture from an already cross-compiled bridge binary,
# with dpkg-deb only (no debhelper, no build dependencies):
#
#   packaging/build-deb.sh ARCH BRIDGE_BINARY [OUTDIR]    ARCH: amd64, arm64 or armhf
#
# For armhf pass the GOARM=6 binary: Raspberry Pi OS's 32-bit "armhf" is ARMv6 hard-float and runs on the
# Pi Zero and Pi 1, which an ARMv7 binary would crash on. Prints the path of the .deb.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ARCH=${1:?usage: build-deb.sh ARCH BRIDGE_BINARY [OUTDIR]}
BRIDGE=${2:?usage: build-deb.sh ARCH BRIDGE_BINARY [OUTDIR]}
OUT=${3:-$REPO/dist}
case $ARCH in amd64 | arm64 | armhf) ;; *) echo "build-deb.sh: unsupported architecture $ARCH" >&2; exit 2 ;; esac
[ -x "$BRIDGE" ] || { echo "build-deb.sh: $BRIDGE is not an executable" >&2; exit 2; }

# Debian versions must start with a digit: v1.2.3 -> 1.2.3, an untagged commit -> 0.0~git<date>.<hash>.
debian_version() {
	local tag
	if tag=$(git -C "$REPO" describe --tags --exact-match 2>/dev/null); then
		echo "${tag#v}"
	else
		git -C "$REPO" log -1 --format='0.0~git%cd.%h' --date=format:%Y%m%d 2>/dev/null || echo 0.0~dev
	fi
}
VERSION=${DEB_VERSION:-$(debian_version)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}

STAGE=$(mktemp -d)
chmod 0755 "$STAGE"
trap 'rm -rf "$STAGE"' EXIT
put() { # put MODE SOURCE DEST: install a file into the package tree
	install -D -m "$1" "$2" "$STAGE/$3"
}
put 0755 "$BRIDGE" usr/bin/bridge
put 0644 "$REPO/systemd/bridge.service" lib/systemd/system/bridge.service
put 0644 "$HERE/sysusers.conf" usr/lib/sysusers.d/tributary.conf
put 0644 "$HERE/udev.rules" lib/udev/rules.d/60-tributary.rules
put 0644 "$HERE/modules-load.conf" usr/lib/modules-load.d/tributary.conf
put 0644 "$HERE/sysctl.conf" usr/lib/sysctl.d/60-tributary.conf
put 0644 "$HERE/bridge.toml" etc/tributary/bridge.toml
put 0644 "$REPO/gateway/bridge.example.toml" usr/share/doc/tributary/bridge.example.toml
put 0644 "$HERE/debian/copyright" usr/share/doc/tributary/copyright
for script in postinst prerm postrm; do
	put 0755 "$HERE/debian/$script" "DEBIAN/$script"
done
put 0644 "$HERE/debian/conffiles" DEBIAN/conffiles

installed_kb=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: tributary
Version: $VERSION
Architecture: $ARCH
Maintainer: Tributary developers <tributary@users.noreply.github.com>
Installed-Size: $installed_kb
Depends: systemd (>= 252), init-system-helpers
Section: net
Priority: optional
Homepage: https://github.com/tributary-iot/tributary
Description: edge gateway from MQTT sensors to the Streamr Network
 Runs an embedded MQTT broker, signs every reading with the gateway's
 identity in the Streamr message format, stores it durably before the
 sensor's PUBACK and forwards it peer to peer. Installs and starts the
 hardened bridge.service as the unprivileged user tributary.
CONTROL
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum >DEBIAN/md5sums)
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
deb=$OUT/tributary_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$deb" >/dev/null
echo "$deb"
