package streamr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The decoder below reads StreamMessage protobufs directly with protowire,
// as encode.go writes them: a received reading then costs three
// allocations (its structs, one block for all its bytes fields, one string
// for all its string fields) instead of a tree of generated structs filled
// through reflection and copied again. It accepts and rejects exactly what
// proto.Unmarshal of the generated pb types does and returns the same
// fields (FuzzUnmarshalMatchesProto checks this on arbitrary bytes):
// unknown fields, and known fields of another wire type, are skipped once
// their framing is checked; a repeated scalar field keeps its last value;
// a message field that occurs again merges; a oneof field of another kind than the
// current body starts a fresh body; strings must be valid UTF-8; empty
// bytes fields decode as nil.
//
// While decoding, string and bytes fields are sub-slices of the input
// (wire* types); message() copies them out, so a decoded message never
// aliases its input (callers pass buffers Badger reuses).

// errUTF8 is the error of a string field that is not valid UTF-8.
var errUTF8 = errors.New("string is not valid UTF-8")

// wireField is one field of a protobuf message: its varint value or its
// length-delimited payload, by wire type. Fields of other wire types are
// never known fields here: read only checks their framing.
type wireField struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// read consumes one field from b into f and returns the rest of b.
func (f *wireField) read(b []byte) ([]byte, error) {
	var tag uint64
	var n int
	if len(b) > 0 && b[0] < 0x80 { // the common one-byte tag
		tag, n = uint64(b[0]), 1
	} else if tag, n = protowire.ConsumeVarint(b); n < 0 {
		return nil, fmt.Errorf("tag: %w", protowire.ParseError(n))
	}
	if num := tag >> 3; num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return nil, fmt.Errorf("field number %d is out of range", num)
	}
	f.num, f.typ = protowire.Number(tag>>3), protowire.Type(tag&7)
	b = b[n:]
	switch f.typ {
	case protowire.VarintType:
		f.v, n = protowire.ConsumeVarint(b)
	case protowire.BytesType:
		f.b, n = protowire.ConsumeBytes(b)
	default:
		n = protowire.ConsumeFieldValue(f.num, f.typ, b)
	}
	if n < 0 {
		return nil, fmt.Errorf("field %d: %w", f.num, protowire.ParseError(n))
	}
	return b[n:], nil
}

// eachField calls fn with every field of the message b in turn.
func eachField(b []byte, fn func(wireField) error) error {
	var f wireField
	for len(b) > 0 {
		var err error
		if b, err = f.read(b); err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// is reports whether f is field num of wire type typ: a known field of
// another wire type is an unknown field to proto.Unmarshal.
func (f *wireField) is(num protowire.Number, typ protowire.Type) bool {
	return f.num == num && f.typ == typ
}

// str returns f's payload after checking that it is valid UTF-8.
func (f *wireField) str(name string) ([]byte, error) {
	if !utf8.Valid(f.b) {
		return nil, fmt.Errorf("field %s (%d): %w", name, f.num, errUTF8)
	}
	return f.b, nil
}

// text returns a copy of f's payload as a string, valid UTF-8.
func (f *wireField) text(name string) (string, error) {
	s, err := f.str(name)
	return string(s), err
}

// wireID is a MessageID as read, its string and bytes fields not copied.
type wireID struct {
	streamID, publisherID, chainID []byte
	partition, sequence            int32
	timestamp                      int64
}

func (id *wireID) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		var err error
		switch {
		case f.is(1, protowire.BytesType):
			if id.streamID, err = f.str("streamId"); err != nil {
				return err
			}
		case f.is(2, protowire.VarintType):
			id.partition = int32(f.v)
		case f.is(3, protowire.VarintType):
			id.timestamp = int64(f.v)
		case f.is(4, protowire.VarintType):
			id.sequence = int32(f.v)
		case f.is(5, protowire.BytesType):
			id.publisherID = f.b
		case f.is(6, protowire.BytesType):
			if id.chainID, err = f.str("messageChainId"); err != nil {
				return err
			}
		}
		return nil
	})
}

func (r *MessageRef) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		switch {
		case f.is(1, protowire.VarintType):
			r.Timestamp = int64(f.v)
		case f.is(2, protowire.VarintType):
			r.SequenceNumber = int32(f.v)
		}
		return nil
	})
}

// wireContent is a ContentMessage as read.
type wireContent struct {
	content        []byte
	contentType    ContentType
	encryptionType EncryptionType
	groupKeyID     []byte
	hasGroupKeyID  bool
	newKey         wireKey
	hasNewKey      bool
}

func (c *wireContent) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		var err error
		switch {
		case f.is(1, protowire.BytesType):
			c.content = f.b
		case f.is(2, protowire.VarintType):
			c.contentType = ContentType(f.v)
		case f.is(3, protowire.VarintType):
			c.encryptionType = EncryptionType(f.v)
		case f.is(4, protowire.BytesType):
			if c.groupKeyID, err = f.str("groupKeyId"); err != nil {
				return err
			}
			c.hasGroupKeyID = true
		case f.is(5, protowire.BytesType):
			if err := c.newKey.decode(f.b); err != nil {
				return fmt.Errorf("field newGroupKey (5): %w", err)
			}
			c.hasNewKey = true
		}
		return nil
	})
}

// wireKey is an EncryptedGroupKey as read.
type wireKey struct{ id, data []byte }

func (k *wireKey) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		var err error
		switch {
		case f.is(1, protowire.BytesType):
			if k.id, err = f.str("id"); err != nil {
				return err
			}
		case f.is(2, protowire.BytesType):
			k.data = f.b
		}
		return nil
	})
}

// The group key bodies are rare (a few per subscriber and key rotation):
// they are decoded straight into their own copies.

func (r *GroupKeyRequest) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		var err error
		switch {
		case f.is(1, protowire.BytesType):
			if r.RequestID, err = f.text("requestId"); err != nil {
				return err
			}
		case f.is(2, protowire.BytesType):
			r.RecipientID = cloneField(f.b)
		case f.is(3, protowire.BytesType):
			r.PublicKey = cloneField(f.b)
		case f.is(4, protowire.BytesType):
			id, err := f.text("groupKeyIds")
			if err != nil {
				return err
			}
			r.GroupKeyIDs = append(r.GroupKeyIDs, id)
		case f.is(5, protowire.VarintType):
			r.EncryptionType = AsymmetricEncryptionType(f.v)
		}
		return nil
	})
}

func (r *GroupKeyResponse) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		var err error
		switch {
		case f.is(1, protowire.BytesType):
			if r.RequestID, err = f.text("requestId"); err != nil {
				return err
			}
		case f.is(2, protowire.BytesType):
			r.RecipientID = cloneField(f.b)
		case f.is(3, protowire.BytesType):
			var k wireKey
			if err := k.decode(f.b); err != nil {
				return fmt.Errorf("field groupKeys (3): %w", err)
			}
			r.GroupKeys = append(r.GroupKeys, EncryptedGroupKey{ID: string(k.id), Data: cloneField(k.data)})
		case f.is(4, protowire.VarintType):
			r.EncryptionType = AsymmetricEncryptionType(f.v)
		}
		return nil
	})
}

// cloneField copies a bytes field; empty decodes as nil, as in proto.Unmarshal.
func cloneField(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// wireMessage is a StreamMessage as read.
type wireMessage struct {
	id            wireID
	hasID         bool
	prev          MessageRef
	hasPrev       bool
	signature     []byte
	signatureType SignatureType
	body          protowire.Number // field number of the body read last; 0: none
	content       wireContent
	request       *GroupKeyRequest
	response      *GroupKeyResponse
}

func (w *wireMessage) decode(b []byte) error { return eachField(b, w.decodeField) }

func (w *wireMessage) decodeField(f wireField) error {
	if f.typ == protowire.VarintType && f.num == fieldMsgSignatureType {
		w.signatureType = SignatureType(f.v)
		return nil
	}
	if f.typ != protowire.BytesType {
		return nil
	}
	var err error
	switch f.num {
	case fieldMsgID:
		w.hasID = true
		err = w.id.decode(f.b)
	case fieldMsgPrev:
		w.hasPrev = true
		err = w.prev.decode(f.b)
	case fieldMsgSignature:
		w.signature = f.b
	case fieldMsgContent:
		if w.body != fieldMsgContent {
			w.content = wireContent{}
		}
		w.body = fieldMsgContent
		err = w.content.decode(f.b)
	case fieldMsgKeyRequest:
		if w.body != fieldMsgKeyRequest {
			w.request = new(GroupKeyRequest)
		}
		w.body = fieldMsgKeyRequest
		err = w.request.decode(f.b)
	case fieldMsgKeyResponse:
		if w.body != fieldMsgKeyResponse {
			w.response = new(GroupKeyResponse)
		}
		w.body = fieldMsgKeyResponse
		err = w.response.decode(f.b)
	}
	if err != nil {
		return fmt.Errorf("field %s (%d): %w", messageFieldName(f.num), f.num, err)
	}
	return nil
}

// messageFieldName names the StreamMessage fields that are messages.
func messageFieldName(num protowire.Number) string {
	switch num {
	case fieldMsgID:
		return "messageId"
	case fieldMsgPrev:
		return "previousMessageRef"
	case fieldMsgContent:
		return "contentMessage"
	case fieldMsgKeyRequest:
		return "groupKeyRequest"
	case fieldMsgKeyResponse:
		return "groupKeyResponse"
	}
	return "?"
}

// contentBlock holds a content message's structs in one allocation.
type contentBlock struct {
	msg        StreamMessage
	prev       MessageRef
	content    ContentMessage
	groupKeyID string
	newKey     EncryptedGroupKey
}

// message returns the decoded message, its fields copied out of the input.
func (w *wireMessage) message() *StreamMessage {
	var m *StreamMessage
	var prev *MessageRef
	var blk *contentBlock
	if w.body == fieldMsgContent {
		blk = new(contentBlock)
		m, prev = &blk.msg, &blk.prev
	} else {
		m = new(StreamMessage)
		w.content = wireContent{} // a content body a later group key body replaced
	}
	c := &w.content
	bytesOut := newByteArena(len(w.id.publisherID) + len(w.signature) + len(c.content) + len(c.newKey.data))
	strs := newStringArena(w.id.streamID, w.id.chainID, c.groupKeyID, c.newKey.id)
	m.ID = w.id.messageID(&bytesOut, &strs)
	m.Signature = bytesOut.copy(w.signature)
	m.SignatureType = w.signatureType
	if w.hasPrev {
		if prev == nil {
			prev = new(MessageRef)
		}
		*prev = w.prev
		m.PrevMsgRef = prev
	}
	switch w.body {
	case fieldMsgContent:
		blk.content = ContentMessage{
			Content: bytesOut.copy(c.content), ContentType: c.contentType, EncryptionType: c.encryptionType,
		}
		if blk.groupKeyID = strs.next(len(c.groupKeyID)); c.hasGroupKeyID {
			blk.content.GroupKeyID = &blk.groupKeyID
		}
		blk.newKey = EncryptedGroupKey{ID: strs.next(len(c.newKey.id)), Data: bytesOut.copy(c.newKey.data)}
		if c.hasNewKey {
			blk.content.NewGroupKey = &blk.newKey
		}
		m.Body = &blk.content
	case fieldMsgKeyRequest:
		m.Body = w.request
	case fieldMsgKeyResponse:
		if w.response.GroupKeys == nil {
			w.response.GroupKeys = []EncryptedGroupKey{} // as fromProto's make(…, 0)
		}
		m.Body = w.response
	}
	return m
}

func (id *wireID) messageID(bytesOut *byteArena, strs *stringArena) MessageID {
	return MessageID{
		StreamID:        StreamID(strs.next(len(id.streamID))),
		StreamPartition: id.partition,
		Timestamp:       id.timestamp,
		SequenceNumber:  id.sequence,
		PublisherID:     bytesOut.copy(id.publisherID),
		MsgChainID:      strs.next(len(id.chainID)),
	}
}

// byteArena hands out copies of bytes fields from one allocation.
type byteArena []byte

func newByteArena(size int) byteArena {
	if size == 0 {
		return nil
	}
	return make([]byte, 0, size)
}

// copy returns a copy of b whose capacity ends with it, so that appending
// to one field never overwrites the next; nil if b is empty.
func (a *byteArena) copy(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	start := len(*a)
	*a = append(*a, b...)
	return (*a)[start:len(*a):len(*a)]
}

// stringArena is the concatenation of a message's string fields, one
// allocation, handed out again in the order it was built from.
type stringArena struct {
	all string
	off int
}

func newStringArena(parts ...[]byte) stringArena {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n == 0 {
		return stringArena{}
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, p := range parts {
		sb.Write(p)
	}
	return stringArena{all: sb.String()}
}

func (a *stringArena) next(n int) string {
	s := a.all[a.off : a.off+n]
	a.off += n
	return s
}

// wireHeader is what UnmarshalHeader reads: the fields of
// pb.StreamMessageHeader, every other field skipped unread.
type wireHeader struct {
	id        wireID
	hasID     bool
	signature []byte
}

func (h *wireHeader) decode(b []byte) error {
	return eachField(b, func(f wireField) error {
		switch {
		case f.is(fieldMsgID, protowire.BytesType):
			h.hasID = true
			if err := h.id.decode(f.b); err != nil {
				return fmt.Errorf("field messageId (1): %w", err)
			}
		case f.is(fieldMsgSignature, protowire.BytesType):
			h.signature = f.b
		}
		return nil
	})
}
