package streamr

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The encoder below writes StreamMessage protobufs directly with protowire:
// the per-reading hot path then costs two passes over the fields and one
// allocation, instead of building a tree of generated structs. It writes
// fields in number order and omits proto3 defaults, byte for byte like
// proto.Marshal of the generated pb types (codec_test.go checks this).

// Field numbers of NetworkRpc.proto (streamr/pb/NetworkRpc.proto).
const (
	fieldMsgID, fieldMsgPrev, fieldMsgSignature, fieldMsgSignatureType = 1, 2, 3, 4
	fieldMsgContent, fieldMsgKeyRequest, fieldMsgKeyResponse           = 5, 6, 7
)

// encodedSize returns the size of m's encoding.
func (m *StreamMessage) encodedSize() int {
	n := sizeMessage(fieldMsgID, m.ID.size())
	if p := m.PrevMsgRef; p != nil {
		n += sizeMessage(fieldMsgPrev, p.size())
	}
	n += sizeBytes(fieldMsgSignature, len(m.Signature)) + sizeVarint(fieldMsgSignatureType, int64(m.SignatureType))
	switch b := m.Body.(type) {
	case *ContentMessage:
		n += sizeMessage(fieldMsgContent, b.size())
	case *GroupKeyRequest:
		n += sizeMessage(fieldMsgKeyRequest, b.size())
	case *GroupKeyResponse:
		n += sizeMessage(fieldMsgKeyResponse, b.size())
	}
	return n
}

func (m *StreamMessage) appendProto(dst []byte) []byte {
	dst = appendMessageHeader(dst, fieldMsgID, m.ID.size())
	dst = m.ID.appendProto(dst)
	if p := m.PrevMsgRef; p != nil {
		dst = appendMessageHeader(dst, fieldMsgPrev, p.size())
		dst = p.appendProto(dst)
	}
	dst = appendBytes(dst, fieldMsgSignature, m.Signature)
	dst = appendVarint(dst, fieldMsgSignatureType, int64(m.SignatureType))
	switch b := m.Body.(type) {
	case *ContentMessage:
		dst = appendMessageHeader(dst, fieldMsgContent, b.size())
		dst = b.appendProto(dst)
	case *GroupKeyRequest:
		dst = appendMessageHeader(dst, fieldMsgKeyRequest, b.size())
		dst = b.appendProto(dst)
	case *GroupKeyResponse:
		dst = appendMessageHeader(dst, fieldMsgKeyResponse, b.size())
		dst = b.appendProto(dst)
	}
	return dst
}

// checkEncodable rejects what proto.Marshal would: a missing or unknown
// body, and strings that are not valid UTF-8.
func (m *StreamMessage) checkEncodable() error {
	bad := invalidUTF8("messageId.streamId", string(m.ID.StreamID), "messageId.messageChainId", m.ID.MsgChainID)
	switch b := m.Body.(type) {
	case *ContentMessage:
		if bad == "" && b.GroupKeyID != nil {
			bad = invalidUTF8("contentMessage.groupKeyId", *b.GroupKeyID)
		}
		if bad == "" && b.NewGroupKey != nil {
			bad = invalidUTF8("contentMessage.newGroupKey.id", b.NewGroupKey.ID)
		}
	case *GroupKeyRequest:
		if bad == "" {
			bad = invalidUTF8("groupKeyRequest.requestId", b.RequestID)
		}
		for i := 0; bad == "" && i < len(b.GroupKeyIDs); i++ {
			bad = invalidUTF8("groupKeyRequest.groupKeyIds", b.GroupKeyIDs[i])
		}
	case *GroupKeyResponse:
		if bad == "" {
			bad = invalidUTF8("groupKeyResponse.requestId", b.RequestID)
		}
		for i := 0; bad == "" && i < len(b.GroupKeys); i++ {
			bad = invalidUTF8("groupKeyResponse.groupKeys.id", b.GroupKeys[i].ID)
		}
	case nil:
		return fmt.Errorf("encode StreamMessage %s: no body", m.ID.Ref())
	default:
		return fmt.Errorf("encode StreamMessage %s: unknown body type %T", m.ID.Ref(), b)
	}
	if bad != "" {
		return fmt.Errorf("encode StreamMessage %s: field %s is not valid UTF-8", m.ID.Ref(), bad)
	}
	return nil
}

// invalidUTF8 takes (field name, value) pairs and returns the name of the
// first field whose value is not valid UTF-8, or "".
func invalidUTF8(fieldValues ...string) string {
	for i := 0; i+1 < len(fieldValues); i += 2 {
		if !utf8.ValidString(fieldValues[i+1]) {
			return fieldValues[i]
		}
	}
	return ""
}

func (id *MessageID) size() int {
	return sizeBytes(1, len(id.StreamID)) + sizeVarint(2, int64(id.StreamPartition)) + sizeVarint(3, id.Timestamp) +
		sizeVarint(4, int64(id.SequenceNumber)) + sizeBytes(5, len(id.PublisherID)) + sizeBytes(6, len(id.MsgChainID))
}

func (id *MessageID) appendProto(dst []byte) []byte {
	dst = appendString(dst, 1, string(id.StreamID))
	dst = appendVarint(dst, 2, int64(id.StreamPartition))
	dst = appendVarint(dst, 3, id.Timestamp)
	dst = appendVarint(dst, 4, int64(id.SequenceNumber))
	dst = appendBytes(dst, 5, id.PublisherID)
	return appendString(dst, 6, id.MsgChainID)
}

func (r *MessageRef) size() int {
	return sizeVarint(1, r.Timestamp) + sizeVarint(2, int64(r.SequenceNumber))
}

func (r *MessageRef) appendProto(dst []byte) []byte {
	return appendVarint(appendVarint(dst, 1, r.Timestamp), 2, int64(r.SequenceNumber))
}

func (c *ContentMessage) size() int {
	n := sizeBytes(1, len(c.Content)) + sizeVarint(2, int64(c.ContentType)) + sizeVarint(3, int64(c.EncryptionType))
	if c.GroupKeyID != nil { // proto3 optional: written even when empty
		n += protowire.SizeTag(4) + protowire.SizeBytes(len(*c.GroupKeyID))
	}
	if k := c.NewGroupKey; k != nil {
		n += sizeMessage(5, k.size())
	}
	return n
}

func (c *ContentMessage) appendProto(dst []byte) []byte {
	dst = appendBytes(dst, 1, c.Content)
	dst = appendVarint(dst, 2, int64(c.ContentType))
	dst = appendVarint(dst, 3, int64(c.EncryptionType))
	if c.GroupKeyID != nil {
		dst = protowire.AppendTag(dst, 4, protowire.BytesType)
		dst = protowire.AppendString(dst, *c.GroupKeyID)
	}
	if k := c.NewGroupKey; k != nil {
		dst = appendMessageHeader(dst, 5, k.size())
		dst = k.appendProto(dst)
	}
	return dst
}

func (r *GroupKeyRequest) size() int {
	n := sizeBytes(1, len(r.RequestID)) + sizeBytes(2, len(r.RecipientID)) + sizeBytes(3, len(r.PublicKey))
	for _, id := range r.GroupKeyIDs { // repeated: every element is written
		n += protowire.SizeTag(4) + protowire.SizeBytes(len(id))
	}
	return n + sizeVarint(5, int64(r.EncryptionType))
}

func (r *GroupKeyRequest) appendProto(dst []byte) []byte {
	dst = appendString(dst, 1, r.RequestID)
	dst = appendBytes(dst, 2, r.RecipientID)
	dst = appendBytes(dst, 3, r.PublicKey)
	for _, id := range r.GroupKeyIDs {
		dst = protowire.AppendTag(dst, 4, protowire.BytesType)
		dst = protowire.AppendString(dst, id)
	}
	return appendVarint(dst, 5, int64(r.EncryptionType))
}

func (r *GroupKeyResponse) size() int {
	n := sizeBytes(1, len(r.RequestID)) + sizeBytes(2, len(r.RecipientID))
	for i := range r.GroupKeys {
		n += sizeMessage(3, r.GroupKeys[i].size())
	}
	return n + sizeVarint(4, int64(r.EncryptionType))
}

func (r *GroupKeyResponse) appendProto(dst []byte) []byte {
	dst = appendString(dst, 1, r.RequestID)
	dst = appendBytes(dst, 2, r.RecipientID)
	for i := range r.GroupKeys {
		dst = appendMessageHeader(dst, 3, r.GroupKeys[i].size())
		dst = r.GroupKeys[i].appendProto(dst)
	}
	return appendVarint(dst, 4, int64(r.EncryptionType))
}

func (k *EncryptedGroupKey) size() int { return sizeBytes(1, len(k.ID)) + sizeBytes(2, len(k.Data)) }

func (k *EncryptedGroupKey) appendProto(dst []byte) []byte {
	return appendBytes(appendString(dst, 1, k.ID), 2, k.Data)
}

// Proto3 scalar fields with their default value (0, empty) are omitted;
// int32 and enum values are sign-extended to 64 bits.

func sizeVarint(num protowire.Number, v int64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(uint64(v))
}

func sizeBytes(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func sizeMessage(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func appendVarint(dst []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return dst
	}
	return protowire.AppendVarint(protowire.AppendTag(dst, num, protowire.VarintType), uint64(v))
}

func appendBytes(dst []byte, num protowire.Number, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	return protowire.AppendBytes(protowire.AppendTag(dst, num, protowire.BytesType), b)
}

func appendString(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	return protowire.AppendString(protowire.AppendTag(dst, num, protowire.BytesType), s)
}

func appendMessageHeader(dst []byte, num protowire.Number, size int) []byte {
	return protowire.AppendVarint(protowire.AppendTag(dst, num, protowire.BytesType), uint64(size))
}
