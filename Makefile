# Tributary build entry points. Go's own cache makes every target cheap to re-run, so all are phony.
#   make test        the whole suite, as CI runs it (scripts/test.sh: installs what it needs; root, ~30 min)
#   make check       before a push: go vet, make lint, go test -race -short ./... (a few minutes)
#   make lint        gofmt -l, staticcheck and govulncheck (make fmt-check, staticcheck, vulncheck)
#   make build       bin/bridge for this machine, as it ships (scripts/build.sh native)
#   make cross       static, stripped binaries with cgo (libsecp256k1) in dist/ for linux arm64, armv6, armv7, amd64
#                    (scripts/build.sh: Debian's cross compilers, each binary started once under qemu-user)
#   make deb         dist/tributary_<version>_{amd64,arm64,armhf}.deb
#   make test-deb    install the amd64 .deb in an mmdebstrap chroot and check its maintainer scripts (root)
#   make image       Raspberry Pi 3/4 SD-card image in firmware-image/out (root, ~15 min cold)
#   make test-boot   build the image and boot-test it in QEMU (root)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DIST := dist
# scripts/build.sh's targets; armv6 is what Raspberry Pi OS "armhf" (and Pi Zero/1) needs, armv7 suits Debian armhf.
TARGETS := arm64 armv6 armv7 amd64
# scripts/build.sh adds these linker flags: the version stamp.
export LDFLAGS_EXTRA := -X main.version=$(VERSION)

# Tools run at pinned versions from the Go module proxy, so no go.mod of the project carries them.
STATICCHECK_VERSION := v0.8.2

# Every recipe stops at its first failing command, in a pipeline too.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: test check vet lint fmt-check staticcheck vulncheck test-short build cross deb test-deb image test-boot clean

test:
	scripts/test.sh

check: vet lint test-short

vet:
	go vet ./...
	CGO_ENABLED=1 go vet -tags pkcs11 ./hw/...

lint: fmt-check staticcheck vulncheck

fmt-check:
	@files=$$(gofmt -l .); \
	if [ -n "$$files" ]; then echo "gofmt: these files are not formatted (gofmt -w FILE):"; echo "$$files"; exit 1; fi

staticcheck:
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	CGO_ENABLED=1 go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) -tags pkcs11 ./hw/...

vulncheck:
	scripts/vulncheck.sh

test-short:
	go test -race -short ./...

build:
	scripts/build.sh native bin/bridge

cross:
	@mkdir -p $(DIST)
	@for t in $(TARGETS); do scripts/build.sh $$t $(DIST)/bridge-linux-$$t; done
	@echo "stripped sizes ($(VERSION)):" | tee $(DIST)/sizes.txt
	@for t in $(TARGETS); do f=$(DIST)/bridge-linux-$$t; \
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
