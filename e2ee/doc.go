// Package e2ee is Tributary's end-to-end encryption, the Streamr SDK's
// scheme (streamr-protocol.md §5): a publisher encrypts content with
// per-stream AES-256 group keys, which it rotates in band or replaces on
// demand, and hands them out to allowed subscribers through signed
// GroupKeyRequest/GroupKeyResponse messages in the stream partition
// (RSA-OAEP or ML-KEM-1024). A subscriber requests the keys it lacks,
// keeps them durably, and decrypts.
//
// Beyond the SDK, a key server (Config.ServeParts: a storage gateway
// with answer_key_requests) answers for a publisher that is offline: it
// obtains the keys of the messages it stores as a subscriber would
// (Collect), follows rotations, and answers requests addressed to their
// publisher for the requesters it allows, signed by itself. A subscriber
// takes such an answer only if its signer may publish on the stream
// (Config.KeyServers, the overlay's publisher policy). That is the SDK's
// own rule for group key messages (§2.4: the signer may publish, the
// other party may subscribe), and Publish permission is the right
// delegation: whoever may publish on a stream can already write what its
// readers decrypt, so trusting it with the keys grants nothing more. A
// key server hands a key only to requesters allowed on a stream it saw
// the key encrypt.
//
// The package knows no transport: the caller passes it key exchange
// messages received in a partition (HandleMessage) and gives it each
// partition's overlay topic to publish its own (Attach).
package e2ee
