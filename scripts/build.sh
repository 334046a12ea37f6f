#!/usr/bin/env bash
# Builds the bridge as it ships: one statically linked binary, with cgo, so that go-ethereum recovers
# and makes signatures with libsecp256k1 (it bundles the C sources). Without cgo it falls back to
# pure-Go secp256k1, which verifies 3.6x slower (BENCHMARKS.md, "Session 9" and "Session 10"): every
# reading a gateway receives is verified, so that is the product's throughput.
#
#	scripts/build.sh TARGET OUT      TARGET: native, amd64, arm64, armv6 (Pi Zero/1) or armv7
#
# LDFLAGS_EXTRA adds linker flags (the Makefile's version stamp, -X main.version=…). Cross targets use
# Debian's cross compilers, installed when missing. Both 32-bit ARM targets use the armel (soft-float)
# toolchain: a static binary uses no system library, so it runs on Raspberry Pi OS's armhf as well, and
# a static armhf-glibc bridge crashes in __libc_start_main before main (seen under qemu-arm, session 10).
# Each cross binary is started once under qemu-user (as the oldest CPU of its target, so an instruction
# the target lacks fails here), and every binary is checked to be static and built with cgo.
# CGO_ENABLED=0 builds the pure-Go fallback instead (to measure it); the checks then skip cgo.
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(…) stops the script too
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pkg-lib.sh
source scripts/pkg-lib.sh

target=${1:?usage: scripts/build.sh TARGET OUT}
out=${2:?usage: scripts/build.sh TARGET OUT}
cgo=${CGO_ENABLED:-1}

host=$(go env GOHOSTARCH)
[ "$target" = native ] && target=$host
# Per target: GOARCH, GOARM, the C cross compiler, its packages, C flags, QEMU's emulator and CPU. The
# cross C library is named apart: the compiler only Recommends it, and a static link needs its libc.a.
case $target in
amd64) spec=(amd64 "" x86_64-linux-gnu-gcc "gcc-x86-64-linux-gnu libc6-dev-amd64-cross" "-O2" qemu-x86_64-static qemu64) ;;
arm64) spec=(arm64 "" aarch64-linux-gnu-gcc "gcc-aarch64-linux-gnu libc6-dev-arm64-cross" "-O2" qemu-aarch64-static cortex-a53) ;;
armv6) spec=(arm 6 arm-linux-gnueabi-gcc "gcc-arm-linux-gnueabi libc6-dev-armel-cross" "-O2 -march=armv6" qemu-arm-static arm1176) ;;
armv7) spec=(arm 7 arm-linux-gnueabi-gcc "gcc-arm-linux-gnueabi libc6-dev-armel-cross" "-O2 -march=armv7-a" qemu-arm-static cortex-a7) ;;
*) echo "build.sh: unknown target $target (want native, amd64, arm64, armv6 or armv7)" >&2; exit 2 ;;
esac
goarch=${spec[0]} goarm=${spec[1]} cc=${spec[2]} cc_pkgs=${spec[3]} cflags=${spec[4]} qemu=${spec[5]} qemu_cpu=${spec[6]}
if [ "$goarch" = "$host" ]; then
	cc=gcc cc_pkgs=libc6-dev qemu="" # the host's own compiler; the binary runs natively
else
	# shellcheck disable=SC2086 # cc_pkgs is a list of package names
	[ "$cgo" = 1 ] && install_missing $cc_pkgs
	install_missing qemu-user-static
fi

# A static cgo link needs the target's libc.a; gcc prints the bare name when it has none. Checked here so that
# a package list above that misses it fails by name, not in the linker.
if [ "$cgo" = 1 ] && [ "$("$cc" -print-file-name=libc.a)" = libc.a ]; then
	echo "build.sh: $cc finds no static C library (libc.a); it comes with: $cc_pkgs" >&2
	exit 1
fi

ldflags="-s -w"
[ "$cgo" = 1 ] && ldflags+=" -linkmode external -extldflags -static"
# netgo and osusergo: the pure-Go resolver and user lookup, so no glibc NSS code is linked statically.
CGO_ENABLED=$cgo GOOS=linux GOARCH=$goarch GOARM=$goarm CC=$cc CGO_CFLAGS=$cflags \
	go build -trimpath -tags netgo,osusergo -ldflags "$ldflags ${LDFLAGS_EXTRA:-}" -o "$out" ./cmd/bridge

if readelf -lW "$out" | grep -q 'INTERP'; then
	echo "build.sh: $out is dynamically linked (it needs a program interpreter)" >&2
	exit 1
fi
if [ "$cgo" = 1 ] && ! go version -m "$out" | grep -q 'CGO_ENABLED=1'; then
	echo "build.sh: $out was built without cgo: it would verify signatures with the slow pure-Go code" >&2
	exit 1
fi
if [ -n "$qemu" ]; then
	if ! v=$("$qemu" -cpu "$qemu_cpu" "$out" version 2>&1); then
		echo "build.sh: $out does not start on a $qemu_cpu ($qemu): $v" >&2
		exit 1
	fi
fi
echo "build.sh: $out ($target, CGO_ENABLED=$cgo, static)"
