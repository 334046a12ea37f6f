// Package pb holds generated protobuf wire types: those of Streamr's
// NetworkRpc.proto (the StreamMessage subset, networkrpc.proto) and those of
// Tributary's own resend and receipt protocols (tributary.proto).
//
// The generated files are committed. To regenerate, install protoc
// (apt-get install protobuf-compiler) and run: go generate ./streamr/pb
package pb

//go:generate sh gen.sh
