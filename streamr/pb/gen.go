// Package pb holds generated protobuf wire types: those of the Streamr
// Network (Streamr's DhtRpc.proto, ProtoRpc.proto and NetworkRpc.proto of
// release v103.3.1, unchanged) and those of Tributary's own resend and
// receipt protocols (tributary.proto).
//
// The generated files are committed. To regenerate, install protoc
// (apt-get install protobuf-compiler libprotobuf-dev) and run: go generate ./streamr/pb
package pb

//go:generate sh gen.sh
