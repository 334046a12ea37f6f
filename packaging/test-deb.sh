#!/usr/bin/env bash
# Installs a tributary .deb with apt into a fresh Debian bookworm chroot (mmdebstrap, no containers) and
# checks what its maintainer scripts did: user and groups, enabled unit, config, then remove and purge.
# Starting the service under systemd is checked by firmware-image/test-boot.sh, whose image installs
# the arm64 .deb the same way.
#
#   packaging/test-deb.sh DEB        (an amd64 .deb: the chroot runs natively)
# Needs root and mmdebstrap (installed with apt-get when missing).
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=firmware-image/lib.sh
. "$HERE/../firmware-image/lib.sh"
DEB=$(realpath "${1:?usage: test-deb.sh DEB}")
[ "$(id -u)" = 0 ] || die "must run as root"
install_missing mmdebstrap arch-test

# check.sh runs inside the chroot after `apt-get install ./tributary.deb`.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/check.sh" <<'CHECK'
set -eu
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
getent passwd tributary | grep -q ':/var/lib/tributary:/usr/sbin/nologin$' || fail "user tributary missing or wrong"
for g in i2c gpio tss; do getent group "$g" >/dev/null || fail "group $g missing"; done
[ -L /etc/systemd/system/multi-user.target.wants/bridge.service ] || fail "bridge.service not enabled"
[ "$(stat -c %a /usr/bin/bridge)" = 755 ] || fail "bridge binary mode"
bridge version | grep -q '^bridge ' || fail "bridge version"
bridge check-config /etc/tributary/bridge.toml || fail "shipped config does not validate"
dpkg-query -W -f='${Conffiles}\n' tributary | grep -q /etc/tributary/bridge.toml || fail "bridge.toml is not a conffile"
mkdir -p /var/lib/tributary && echo key >/var/lib/tributary/key
apt-get remove -y -qq tributary >/dev/null
[ ! -e /usr/bin/bridge ] || fail "binary left after remove"
[ -e /etc/tributary/bridge.toml ] || fail "conffile removed by remove"
apt-get purge -y -qq tributary >/dev/null
[ ! -e /etc/tributary/bridge.toml ] || fail "conffile left after purge"
[ -e /var/lib/tributary/key ] || fail "purge deleted the gateway key"
echo "test-deb: PASS"
CHECK

t0=$SECONDS
# shellcheck disable=SC2016 # the hooks' $1 is the chroot directory, expanded by mmdebstrap
mmdebstrap --quiet --mode=root --variant=apt --format=null --include=systemd,udev \
	--customize-hook="copy-in $DEB $WORK/check.sh /tmp" \
	--customize-hook="chroot \"\$1\" apt-get install -y -qq /tmp/$(basename "$DEB")" \
	--customize-hook='chroot "$1" sh /tmp/check.sh' \
	bookworm /dev/null "deb $(host_mirror debian) bookworm main"
log "passed in $((SECONDS - t0)) s"
