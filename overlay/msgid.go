package overlay

import (
	"crypto/sha256"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/streamr"
)

// idLen is the length of a pubsub message ID: a truncated SHA-256 keeps the
// seen cache small and IHAVE/IWANT gossip short, yet collisions stay
// negligible (2^-80 per pair).
const idLen = 20

// undecodableTag prefixes the ID of a message whose Streamr ID cannot be
// read, so it can never collide with a valid message's ID; the validator
// rejects such messages anyway.
const undecodableTag = "!"

// messageID derives the pubsub ID from the encoded StreamMessage's
// MessageID and signature, decoding only those two fields.
func messageID(data []byte) string {
	id, sig, err := streamr.UnmarshalHeader(data)
	if err != nil {
		sum := sha256.Sum256(data)
		return undecodableTag + string(sum[:idLen])
	}
	return idFromFields(&id, sig)
}

// messageIDOf computes the same ID as messageID from a decoded message.
func messageIDOf(m *streamr.StreamMessage) string {
	return idFromFields(&m.ID, m.Signature)
}

func idFromFields(id *streamr.MessageID, sig []byte) string {
	var buf [256]byte
	b := buf[:0]
	b = protowire.AppendString(b, string(id.StreamID))
	b = protowire.AppendVarint(b, uint64(id.StreamPartition))
	b = protowire.AppendVarint(b, uint64(id.Timestamp))
	b = protowire.AppendVarint(b, uint64(id.SequenceNumber))
	b = protowire.AppendBytes(b, id.PublisherID)
	b = protowire.AppendString(b, id.MsgChainID)
	b = protowire.AppendBytes(b, sig)
	sum := sha256.Sum256(b)
	return string(sum[:idLen])
}
