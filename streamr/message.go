package streamr

import (
	"encoding/hex"
	"fmt"
	"strconv"
)

// SignatureType is the algorithm of a message signature (protobuf enum values).
type SignatureType int32

// Signature types of NetworkRpc.proto. Tributary produces and verifies EVM
// and SECP256R1; the others are recognised only to be rejected clearly.
const (
	SignatureLegacy    SignatureType = 0 // ECDSA_SECP256K1_LEGACY: never produced or accepted
	SignatureEVM       SignatureType = 1 // ECDSA_SECP256K1_EVM
	SignatureERC1271   SignatureType = 2 // ERC_1271: needs an on-chain call
	SignatureMLDSA87   SignatureType = 3 // ML_DSA_87
	SignatureSecp256r1 SignatureType = 4 // ECDSA_SECP256R1 (P-256)
)

func (t SignatureType) String() string {
	switch t {
	case SignatureLegacy:
		return "ECDSA_SECP256K1_LEGACY"
	case SignatureEVM:
		return "ECDSA_SECP256K1_EVM"
	case SignatureERC1271:
		return "ERC_1271"
	case SignatureMLDSA87:
		return "ML_DSA_87"
	case SignatureSecp256r1:
		return "ECDSA_SECP256R1"
	}
	return "SignatureType(" + strconv.Itoa(int(t)) + ")"
}

// ContentType says how content bytes are to be read.
type ContentType int32

// Content types.
const (
	ContentJSON   ContentType = 0
	ContentBinary ContentType = 1
)

// EncryptionType says whether content is AES-encrypted with a group key.
type EncryptionType int32

// Encryption types.
const (
	EncryptionNone EncryptionType = 0
	EncryptionAES  EncryptionType = 1
)

// AsymmetricEncryptionType is the key-exchange cipher of group key messages.
type AsymmetricEncryptionType int32

// Asymmetric encryption types.
const (
	AsymmetricRSA   AsymmetricEncryptionType = 0
	AsymmetricMLKEM AsymmetricEncryptionType = 1
)

// MessageRef is a message's position in its chain.
type MessageRef struct {
	Timestamp      int64 // milliseconds since the Unix epoch
	SequenceNumber int32 // orders messages with the same timestamp
}

// Compare returns -1, 0 or +1 as r is before, equal to or after o.
func (r MessageRef) Compare(o MessageRef) int {
	switch {
	case r.Timestamp < o.Timestamp:
		return -1
	case r.Timestamp > o.Timestamp:
		return 1
	case r.SequenceNumber < o.SequenceNumber:
		return -1
	case r.SequenceNumber > o.SequenceNumber:
		return 1
	}
	return 0
}

func (r MessageRef) String() string {
	return strconv.FormatInt(r.Timestamp, 10) + "/" + strconv.FormatInt(int64(r.SequenceNumber), 10)
}

// MessageID identifies a message uniquely in the network.
type MessageID struct {
	StreamID        StreamID
	StreamPartition int32
	Timestamp       int64
	SequenceNumber  int32
	PublisherID     []byte // 20-byte address (EVM) or P-256 public key
	MsgChainID      string
}

// Ref returns the message's position in its chain.
func (id MessageID) Ref() MessageRef {
	return MessageRef{Timestamp: id.Timestamp, SequenceNumber: id.SequenceNumber}
}

// StreamPart returns the stream partition the message belongs to.
func (id MessageID) StreamPart() StreamPartID {
	return StreamPartID{Stream: id.StreamID, Partition: int(id.StreamPartition)}
}

// PublisherHex returns the publisher ID as the SDK's UserID string:
// "0x" followed by lowercase hex.
func (id MessageID) PublisherHex() string {
	return UserID(id.PublisherID)
}

// UserID formats identity bytes as the SDK does: "0x" + lowercase hex.
func UserID(b []byte) string {
	return "0x" + hex.EncodeToString(b)
}

// Body is the payload of a StreamMessage: *ContentMessage, *GroupKeyRequest
// or *GroupKeyResponse.
type Body interface {
	appendSigned(dst []byte) []byte
}

// EncryptedGroupKey is a group key encrypted for a recipient or for rotation.
type EncryptedGroupKey struct {
	ID   string
	Data []byte
}

// ContentMessage carries a reading (or any application data).
type ContentMessage struct {
	Content        []byte
	ContentType    ContentType
	EncryptionType EncryptionType
	GroupKeyID     *string            // set iff EncryptionType is AES
	NewGroupKey    *EncryptedGroupKey // rotation announcement, optional
}

// GroupKeyRequest asks a publisher for group keys.
type GroupKeyRequest struct {
	RequestID      string
	RecipientID    []byte
	PublicKey      []byte
	GroupKeyIDs    []string
	EncryptionType AsymmetricEncryptionType
}

// GroupKeyResponse answers a GroupKeyRequest.
type GroupKeyResponse struct {
	RequestID      string
	RecipientID    []byte
	GroupKeys      []EncryptedGroupKey
	EncryptionType AsymmetricEncryptionType
}

// StreamMessage is the unit of data in the Streamr Network.
type StreamMessage struct {
	ID            MessageID
	PrevMsgRef    *MessageRef // nil for the first message of a chain
	Signature     []byte
	SignatureType SignatureType
	Body          Body
}

// Content returns the content body, or nil for group key messages.
func (m *StreamMessage) Content() *ContentMessage {
	c, _ := m.Body.(*ContentMessage)
	return c
}

// SignaturePayload returns the bytes a publisher signs (spec §2.1): the
// header fields as decimal strings, then the body's signed fields.
func (m *StreamMessage) SignaturePayload() ([]byte, error) {
	if m.Body == nil {
		return nil, fmt.Errorf("message %s: no body", m.ID.Ref())
	}
	id := &m.ID
	// 80 bytes hold the five decimal numbers; "0x" and hex double the publisher.
	header := len(id.StreamID) + len(id.MsgChainID) + 2 + 2*len(id.PublisherID) + 80
	dst := make([]byte, 0, header+bodySizeHint(m.Body))
	return m.appendSignaturePayload(dst), nil
}

func (m *StreamMessage) appendSignaturePayload(dst []byte) []byte {
	id := &m.ID
	dst = append(dst, id.StreamID...)
	dst = strconv.AppendInt(dst, int64(id.StreamPartition), 10)
	dst = strconv.AppendInt(dst, id.Timestamp, 10)
	dst = strconv.AppendInt(dst, int64(id.SequenceNumber), 10)
	dst = append(dst, "0x"...)
	dst = hex.AppendEncode(dst, id.PublisherID)
	dst = append(dst, id.MsgChainID...)
	if p := m.PrevMsgRef; p != nil {
		dst = strconv.AppendInt(dst, p.Timestamp, 10)
		dst = strconv.AppendInt(dst, int64(p.SequenceNumber), 10)
	}
	return m.Body.appendSigned(dst)
}

func bodySizeHint(b Body) int {
	switch b := b.(type) {
	case *ContentMessage:
		n := len(b.Content)
		if k := b.NewGroupKey; k != nil {
			n += len(k.ID) + len(k.Data)
		}
		return n
	case *GroupKeyRequest:
		n := len(b.RequestID) + len(b.RecipientID) + len(b.PublicKey)
		for _, id := range b.GroupKeyIDs {
			n += len(id)
		}
		return n
	case *GroupKeyResponse:
		n := len(b.RequestID) + len(b.RecipientID)
		for _, k := range b.GroupKeys {
			n += len(k.ID) + len(k.Data)
		}
		return n
	}
	return 0
}

func (c *ContentMessage) appendSigned(dst []byte) []byte {
	dst = append(dst, c.Content...)
	if k := c.NewGroupKey; k != nil {
		dst = append(dst, k.ID...)
		dst = append(dst, k.Data...)
	}
	return dst
}

func (r *GroupKeyRequest) appendSigned(dst []byte) []byte {
	dst = append(dst, r.RequestID...)
	dst = append(dst, r.RecipientID...)
	dst = append(dst, r.PublicKey...)
	for _, id := range r.GroupKeyIDs {
		dst = append(dst, id...)
	}
	return dst
}

func (r *GroupKeyResponse) appendSigned(dst []byte) []byte {
	dst = append(dst, r.RequestID...)
	dst = append(dst, r.RecipientID...)
	for _, k := range r.GroupKeys {
		dst = append(dst, k.ID...)
		dst = append(dst, k.Data...)
	}
	return dst
}

func (t AsymmetricEncryptionType) String() string {
	switch t {
	case AsymmetricRSA:
		return "RSA"
	case AsymmetricMLKEM:
		return "ML_KEM"
	}
	return "AsymmetricEncryptionType(" + strconv.Itoa(int(t)) + ")"
}
