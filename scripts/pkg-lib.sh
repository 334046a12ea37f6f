# install_missing PKG...: installs the Debian packages not yet installed (with sudo unless root), without
# their Recommends. Sourced by the scripts that need host packages; not run.
install_missing() {
	local need=() pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
	done
	((${#need[@]})) || return 0
	echo "installing ${need[*]}" >&2
	local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}
