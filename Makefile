# Tributary build entry points. Go's own cache makes every target cheap to re-run, so all are phony.
#   make build       bin/bridge for this machine
#   make cross       static (CGO_ENABLED=0), stripped binaries in dist/ for linux arm64, armv6, armv7, amd64
#   make deb         dist/tributary_<version>_{amd64,arm64,armhf}.deb
#   make test-deb    install the amd64 .deb in an mmdebstrap chroot and check its maintainer scripts (root)
#   make image       Raspberry Pi 3/4 SD-card image in firmware-image/out (root, ~15 min cold)
#   make test-boot   build the image and boot-test it in QEMU (root)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
DIST := dist
# name=GOARCH[:GOARM]; armv6 is what Raspberry Pi OS "armhf" (and Pi Zero/1) needs, armv7 suits Debian armhf.
TARGETS := arm64=arm64 armv6=arm:6 armv7=arm:7 amd64=amd64

.PHONY: build cross deb test-deb image test-boot clean

build:
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/bridge ./cmd/bridge

cross:
	@mkdir -p $(DIST)
	@set -e; for t in $(TARGETS); do \
		name=$${t%%=*}; spec=$${t#*=}; arch=$${spec%%:*}; arm=$$(echo "$$spec" | sed -n 's/.*://p'); \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm go build $(GOFLAGS_BUILD) -o $(DIST)/bridge-linux-$$name ./cmd/bridge; \
	done
	@echo "stripped sizes ($(VERSION)):" | tee $(DIST)/sizes.txt
	@for t in $(TARGETS); do f=$(DIST)/bridge-linux-$${t%%=*}; \
		stat -c %s $$f | awk -v f=$$f '{ printf "  %-26s %6.1f MiB  %10d bytes\n", f, $$1 / 1048576, $$1 }'; \
	done | tee -a $(DIST)/sizes.txt

deb: cross
	packaging/build-deb.sh amd64 $(DIST)/bridge-linux-amd64 $(DIST)
	packaging/build-deb.sh arm64 $(DIST)/bridge-linux-arm64 $(DIST)
	packaging/build-deb.sh armhf $(DIST)/bridge-linux-armv6 $(DIST)

test-deb: deb
	packaging/test-deb.sh $$(ls -t $(DIST)/tributary_*_amd64.deb | head -n1)

image: cross
	VERSION=$(VERSION) firmware-image/build.sh --bridge $(DIST)/bridge-linux-arm64

test-boot: cross
	VERSION=$(VERSION) BRIDGE=$(DIST)/bridge-linux-arm64 firmware-image/test-boot.sh

clean:
	rm -rf bin $(DIST) firmware-image/out/work firmware-image/out/test-boot
