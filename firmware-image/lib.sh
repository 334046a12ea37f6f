# shellcheck shell=bash
# Shared helpers for build.sh and test-boot.sh; sourced, not executed.

log() { printf '%s [%s] %s\n' "$(date +%T)" "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# step announces the next of STEPS long steps, so a build shows how far it is ("step 2/4: …").
STEP=0
step() { STEP=$((STEP + 1)); log "step $STEP/${STEPS:-?}: $*"; }

# A failing step stops the script that sources this file, naming the step, also where it fails inside a
# function or a $(…) (errtrace and inherit_errexit): a failed mmdebstrap must not be followed by stages
# that work on its missing output.
set -eEuo pipefail
shopt -s inherit_errexit
trap 'rc=$?; log "error: line $LINENO: \"$BASH_COMMAND\" failed with exit status $rc"' ERR

# install_missing PKG... installs the Debian packages among them that are missing on the host.
# shellcheck source=scripts/pkg-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/pkg-lib.sh"

# enable_binfmt registers qemu-aarch64 so mmdebstrap can run arm64 maintainer scripts.
enable_binfmt() {
	[ -e /proc/sys/fs/binfmt_misc/register ] ||
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
		die "cannot mount binfmt_misc (the image build needs root and binfmt_misc)"
	update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
	[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 binfmt handler is not registered"
}

# host_mirror prints the first URIs: entry of the host's deb822 sources whose URL ends in $1
# ("debian" or "debian-security"), so the scripts use whatever mirror this machine is configured for.
host_mirror() {
	local suffix=$1 uri
	uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E "/${suffix}/?\$" | head -n1 || true)
	echo "${uri:-http://deb.debian.org/${suffix}}"
}
