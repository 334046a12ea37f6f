package overlay

import (
	"crypto/sha256"
	"errors"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/streamr"
)

// Field numbers of NetworkRpc.proto's StreamMessage and MessageID.
const (
	fieldMessageID = 1
	fieldSignature = 3

	fieldStreamID        = 1
	fieldStreamPartition = 2
	fieldTimestamp       = 3
	fieldSequenceNumber  = 4
	fieldPublisherID     = 5
	fieldMsgChainID      = 6
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
	id, sig, err := scanIDAndSignature(data)
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

var errNoMessageID = errors.New("no messageId field")

// scanIDAndSignature reads fields 1 and 3 of a StreamMessage. Like
// proto.Unmarshal it merges repeated occurrences of the messageId field and
// keeps the last signature.
func scanIDAndSignature(b []byte) (id streamr.MessageID, sig []byte, err error) {
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return id, nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == fieldMessageID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return id, nil, protowire.ParseError(n)
			}
			if err := scanMessageID(v, &id); err != nil {
				return id, nil, err
			}
			found = true
			b = b[n:]
		case num == fieldSignature && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return id, nil, protowire.ParseError(n)
			}
			sig = v
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return id, nil, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if !found {
		return id, nil, errNoMessageID
	}
	return id, sig, nil
}

func scanMessageID(b []byte, id *streamr.MessageID) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var m int
		switch {
		case typ == protowire.BytesType && (num == fieldStreamID || num == fieldPublisherID || num == fieldMsgChainID):
			var v []byte
			v, m = protowire.ConsumeBytes(b)
			switch num {
			case fieldStreamID:
				id.StreamID = streamr.StreamID(v)
			case fieldPublisherID:
				id.PublisherID = v
			default:
				id.MsgChainID = string(v)
			}
		case typ == protowire.VarintType && num >= fieldStreamPartition && num <= fieldSequenceNumber:
			var v uint64
			v, m = protowire.ConsumeVarint(b)
			switch num {
			case fieldStreamPartition:
				id.StreamPartition = int32(v)
			case fieldTimestamp:
				id.Timestamp = int64(v)
			default:
				id.SequenceNumber = int32(v)
			}
		default:
			m = protowire.ConsumeFieldValue(num, typ, b)
		}
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}
