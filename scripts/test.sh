#!/usr/bin/env bash
# Runs Tributary's whole test suite on a fresh Debian machine with Go,
# installing the system packages the tests need when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in softhsm2 swtpm swtpm-tools mosquitto mosquitto-clients nodejs npm; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
	echo "installing: ${need[*]}"
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

export TRIBUTARY_REQUIRE_NODE=1
go vet ./...
go test -race -timeout 20m ./...
