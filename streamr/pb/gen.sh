#!/bin/sh
# Regenerates the .pb.go files from the .proto files with a pinned protoc-gen-go (protoc from Debian: protobuf-compiler, and libprotobuf-dev for the well-known types the Streamr files import).
# DhtRpc.proto, ProtoRpc.proto and NetworkRpc.proto are Streamr's files of release v103.3.1, unchanged; they import
# each other by their paths in streamr-dev/network, so they are staged under those paths (which also become the
# registered file names, as in Streamr's own code) and mapped onto this one Go package.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp/bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
gopkg=github.com/tributary-iot/tributary/streamr/pb
dht=packages/dht/protos/DhtRpc.proto
rpc=packages/proto-rpc/protos/ProtoRpc.proto
net=packages/trackerless-network/protos/NetworkRpc.proto
for f in "$dht" "$rpc" "$net"; do
	mkdir -p "$tmp/src/$(dirname "$f")"
	cp "$(basename "$f")" "$tmp/src/$f"
done
cp tributary.proto "$tmp/src/"
mkdir "$tmp/out"
protoc -I "$tmp/src" --plugin=protoc-gen-go="$tmp/bin/protoc-gen-go" --go_out="$tmp/out" \
	--go_opt=paths=source_relative --go_opt=M"$dht=$gopkg" --go_opt=M"$rpc=$gopkg" --go_opt=M"$net=$gopkg" \
	"$dht" "$rpc" "$net" tributary.proto
for f in "$dht" "$rpc" "$net" tributary.proto; do
	cp "$tmp/out/${f%.proto}.pb.go" .
done
