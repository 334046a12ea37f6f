package streamr

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr/pb"
)

// Marshal encodes m as a NetworkRpc StreamMessage protobuf. The signature
// type is always written, since an omitted field would mean LEGACY.
func (m *StreamMessage) Marshal() ([]byte, error) {
	w, err := m.toProto()
	if err != nil {
		return nil, err
	}
	return proto.Marshal(w)
}

// AppendMarshal appends the protobuf encoding of m to dst.
func (m *StreamMessage) AppendMarshal(dst []byte) ([]byte, error) {
	w, err := m.toProto()
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, w)
}

// Unmarshal decodes a StreamMessage protobuf. It checks only that the
// message ID and a body are present; use Validate for the checks a
// subscriber must make before trusting the message.
func Unmarshal(b []byte) (*StreamMessage, error) {
	var w pb.StreamMessage
	if err := proto.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode StreamMessage: %w", err)
	}
	return fromProto(&w)
}

func (m *StreamMessage) toProto() (*pb.StreamMessage, error) {
	w := &pb.StreamMessage{
		MessageId: &pb.MessageID{
			StreamId:        string(m.ID.StreamID),
			StreamPartition: m.ID.StreamPartition,
			Timestamp:       m.ID.Timestamp,
			SequenceNumber:  m.ID.SequenceNumber,
			PublisherId:     m.ID.PublisherID,
			MessageChainId:  m.ID.MsgChainID,
		},
		Signature:     m.Signature,
		SignatureType: pb.SignatureType(m.SignatureType),
	}
	if p := m.PrevMsgRef; p != nil {
		w.PreviousMessageRef = &pb.MessageRef{Timestamp: p.Timestamp, SequenceNumber: p.SequenceNumber}
	}
	switch b := m.Body.(type) {
	case *ContentMessage:
		c := &pb.ContentMessage{
			Content:        b.Content,
			ContentType:    pb.ContentType(b.ContentType),
			EncryptionType: pb.EncryptionType(b.EncryptionType),
			GroupKeyId:     b.GroupKeyID,
		}
		if k := b.NewGroupKey; k != nil {
			c.NewGroupKey = &pb.EncryptedGroupKey{Id: k.ID, Data: k.Data}
		}
		w.Body = &pb.StreamMessage_ContentMessage{ContentMessage: c}
	case *GroupKeyRequest:
		w.Body = &pb.StreamMessage_GroupKeyRequest{GroupKeyRequest: &pb.GroupKeyRequest{
			RequestId:      b.RequestID,
			RecipientId:    b.RecipientID,
			PublicKey:      b.PublicKey,
			GroupKeyIds:    b.GroupKeyIDs,
			EncryptionType: pb.AsymmetricEncryptionType(b.EncryptionType),
		}}
	case *GroupKeyResponse:
		keys := make([]*pb.EncryptedGroupKey, len(b.GroupKeys))
		for i, k := range b.GroupKeys {
			keys[i] = &pb.EncryptedGroupKey{Id: k.ID, Data: k.Data}
		}
		w.Body = &pb.StreamMessage_GroupKeyResponse{GroupKeyResponse: &pb.GroupKeyResponse{
			RequestId:      b.RequestID,
			RecipientId:    b.RecipientID,
			GroupKeys:      keys,
			EncryptionType: pb.AsymmetricEncryptionType(b.EncryptionType),
		}}
	case nil:
		return nil, errors.New("encode StreamMessage: no body")
	default:
		return nil, fmt.Errorf("encode StreamMessage: unknown body type %T", b)
	}
	return w, nil
}

func fromProto(w *pb.StreamMessage) (*StreamMessage, error) {
	id := w.GetMessageId()
	if id == nil {
		return nil, errors.New("decode StreamMessage: field messageId (1) is missing")
	}
	m := &StreamMessage{
		ID: MessageID{
			StreamID:        StreamID(id.GetStreamId()),
			StreamPartition: id.GetStreamPartition(),
			Timestamp:       id.GetTimestamp(),
			SequenceNumber:  id.GetSequenceNumber(),
			PublisherID:     id.GetPublisherId(),
			MsgChainID:      id.GetMessageChainId(),
		},
		Signature:     w.GetSignature(),
		SignatureType: SignatureType(w.GetSignatureType()),
	}
	if p := w.GetPreviousMessageRef(); p != nil {
		m.PrevMsgRef = &MessageRef{Timestamp: p.GetTimestamp(), SequenceNumber: p.GetSequenceNumber()}
	}
	switch b := w.GetBody().(type) {
	case *pb.StreamMessage_ContentMessage:
		c := b.ContentMessage
		cm := &ContentMessage{
			Content:        c.GetContent(),
			ContentType:    ContentType(c.GetContentType()),
			EncryptionType: EncryptionType(c.GetEncryptionType()),
			GroupKeyID:     c.GroupKeyId,
		}
		if k := c.GetNewGroupKey(); k != nil {
			cm.NewGroupKey = &EncryptedGroupKey{ID: k.GetId(), Data: k.GetData()}
		}
		m.Body = cm
	case *pb.StreamMessage_GroupKeyRequest:
		r := b.GroupKeyRequest
		m.Body = &GroupKeyRequest{
			RequestID:      r.GetRequestId(),
			RecipientID:    r.GetRecipientId(),
			PublicKey:      r.GetPublicKey(),
			GroupKeyIDs:    r.GetGroupKeyIds(),
			EncryptionType: AsymmetricEncryptionType(r.GetEncryptionType()),
		}
	case *pb.StreamMessage_GroupKeyResponse:
		r := b.GroupKeyResponse
		keys := make([]EncryptedGroupKey, len(r.GetGroupKeys()))
		for i, k := range r.GetGroupKeys() {
			keys[i] = EncryptedGroupKey{ID: k.GetId(), Data: k.GetData()}
		}
		m.Body = &GroupKeyResponse{
			RequestID:      r.GetRequestId(),
			RecipientID:    r.GetRecipientId(),
			GroupKeys:      keys,
			EncryptionType: AsymmetricEncryptionType(r.GetEncryptionType()),
		}
	default:
		return nil, errors.New("decode StreamMessage: no body (fields 5-7 all missing)")
	}
	return m, nil
}
