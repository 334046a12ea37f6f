// Package streamr is Tributary's vocabulary for the Streamr Network: stream
// and stream part IDs, partition selection, message IDs and chains, the
// StreamMessage model with its protobuf wire form, signature payloads and
// signatures (ECDSA_SECP256K1_EVM and ECDSA_SECP256R1), the storage node's
// raw export format, AES group-key encryption, subscriber-side
// validation, and the vocabulary Tributary's packages share: resend
// queries, chain receipts, message envelopes, position keys.
//
// It imports none of Tributary's other packages. Every byte it produces
// follows the Streamr protocol so that the official Streamr SDK verifies it.
package streamr
