package streamr

import (
	"errors"
	"fmt"
	"slices"
)

// Marshal encodes m as a NetworkRpc StreamMessage protobuf. The signature
// type is written whenever it is not LEGACY (0): proto3 omits zero enums, and
// an omitted field means LEGACY to every decoder.
func (m *StreamMessage) Marshal() ([]byte, error) {
	if err := m.checkEncodable(); err != nil {
		return nil, err
	}
	return m.appendProto(make([]byte, 0, m.encodedSize())), nil
}

// AppendMarshal appends the protobuf encoding of m to dst.
func (m *StreamMessage) AppendMarshal(dst []byte) ([]byte, error) {
	if err := m.checkEncodable(); err != nil {
		return nil, err
	}
	return m.appendProto(slices.Grow(dst, m.encodedSize())), nil
}

// Unmarshal decodes a StreamMessage protobuf (decode.go). It checks only
// that the message ID and a body are present; use Validate for the checks a
// subscriber must make before trusting the message. The message does not
// alias b.
func Unmarshal(b []byte) (*StreamMessage, error) {
	var w wireMessage
	if err := w.decode(b); err != nil {
		return nil, fmt.Errorf("decode StreamMessage: %w", err)
	}
	if !w.hasID {
		return nil, errors.New("decode StreamMessage: field messageId (1) is missing")
	}
	if w.body == 0 {
		return nil, errors.New("decode StreamMessage: no body (fields 5-7 all missing)")
	}
	return w.message(), nil
}

// UnmarshalHeader decodes only the message ID and the signature of a
// StreamMessage protobuf, for readers that select or identify stored and
// relayed messages without needing their content: it reads what
// proto.Unmarshal reads into pb.StreamMessageHeader, discarding the other
// fields unread. Like Unmarshal it merges repeated messageId fields and
// keeps the last signature; it checks only that the message ID is present.
// The ID and signature do not alias b.
func UnmarshalHeader(b []byte) (MessageID, []byte, error) {
	var h wireHeader
	if err := h.decode(b); err != nil {
		return MessageID{}, nil, fmt.Errorf("decode StreamMessage header: %w", err)
	}
	if !h.hasID {
		return MessageID{}, nil, errors.New("decode StreamMessage header: field messageId (1) is missing")
	}
	bytesOut := newByteArena(len(h.id.publisherID) + len(h.signature))
	strs := newStringArena(h.id.streamID, h.id.chainID)
	id := h.id.messageID(&bytesOut, &strs)
	return id, bytesOut.copy(h.signature), nil
}
