// Package e2ee is Tributary's end-to-end encryption, the Streamr SDK's
// scheme (streamr-protocol.md §5): a publisher encrypts content with
// per-stream AES-256 group keys, which it rotates in band or replaces on
// demand, and hands them out to allowed subscribers through signed
// GroupKeyRequest/GroupKeyResponse messages in the stream partition
// (RSA-OAEP or ML-KEM-1024). A subscriber requests the keys it lacks,
// keeps them durably, and decrypts.
//
// The package knows no transport: the caller passes it key exchange
// messages received in a partition (HandleMessage) and gives it each
// partition's overlay topic to publish its own (Attach).
package e2ee
