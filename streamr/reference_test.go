package streamr

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr/pb"
)

// referenceUnmarshal is Unmarshal through proto.Unmarshal of the generated
// pb types, the decoder Unmarshal replaced: FuzzUnmarshalMatchesProto holds
// the two equal.
func referenceUnmarshal(b []byte) (*StreamMessage, error) {
	var w pb.StreamMessage
	if err := proto.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode StreamMessage: %w", err)
	}
	return fromProto(&w)
}

// headerOptions skip a StreamMessage's body instead of keeping a copy of
// it as unknown fields.
var headerOptions = proto.UnmarshalOptions{DiscardUnknown: true}

// referenceUnmarshalHeader is UnmarshalHeader through proto.Unmarshal.
func referenceUnmarshalHeader(b []byte) (MessageID, []byte, error) {
	var h pb.StreamMessageHeader
	if err := headerOptions.Unmarshal(b, &h); err != nil {
		return MessageID{}, nil, fmt.Errorf("decode StreamMessage header: %w", err)
	}
	id := h.GetMessageId()
	if id == nil {
		return MessageID{}, nil, errors.New("decode StreamMessage header: field messageId (1) is missing")
	}
	return idFromProto(id), h.GetSignature(), nil
}

func idFromProto(id *pb.MessageID) MessageID {
	return MessageID{
		StreamID:        StreamID(id.GetStreamId()),
		StreamPartition: id.GetStreamPartition(),
		Timestamp:       id.GetTimestamp(),
		SequenceNumber:  id.GetSequenceNumber(),
		PublisherID:     id.GetPublisherId(),
		MsgChainID:      id.GetMessageChainId(),
	}
}

func fromProto(w *pb.StreamMessage) (*StreamMessage, error) {
	id := w.GetMessageId()
	if id == nil {
		return nil, errors.New("decode StreamMessage: field messageId (1) is missing")
	}
	m := &StreamMessage{
		ID:            idFromProto(id),
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
