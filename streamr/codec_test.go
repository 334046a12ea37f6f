package streamr

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr/pb"
)

func roundTripMessages(t testing.TB) map[string]*StreamMessage {
	t.Helper()
	gk := "gk-1"
	base := func() *StreamMessage { return testMessage(t) }
	msgs := map[string]*StreamMessage{}

	m := base()
	msgs["json content"] = m

	m = base()
	m.PrevMsgRef = nil
	m.Body = &ContentMessage{Content: []byte{0, 1, 2, 0xff}, ContentType: ContentBinary}
	msgs["binary content without previous ref"] = m

	m = base()
	m.Body = &ContentMessage{Content: []byte{}, ContentType: ContentBinary}
	msgs["empty content"] = m

	m = base()
	m.Body = &ContentMessage{
		Content: []byte("ciphertext"), EncryptionType: EncryptionAES, GroupKeyID: &gk,
		NewGroupKey: &EncryptedGroupKey{ID: "gk-2", Data: []byte("48 bytes of wrapped key")},
	}
	msgs["AES with rotation"] = m

	m = base()
	m.Body = &GroupKeyRequest{RequestID: "r", RecipientID: []byte{1}, PublicKey: []byte("pem"), GroupKeyIDs: []string{"a", "b"}, EncryptionType: AsymmetricMLKEM}
	msgs["group key request"] = m

	m = base()
	m.Body = &GroupKeyResponse{RequestID: "r", RecipientID: []byte{2}, GroupKeys: []EncryptedGroupKey{{ID: "a", Data: []byte{9}}}, EncryptionType: AsymmetricRSA}
	msgs["group key response"] = m

	m = base()
	m.Body = &GroupKeyResponse{RequestID: "r", RecipientID: []byte{2}, GroupKeys: []EncryptedGroupKey{}}
	msgs["group key response without keys"] = m
	return msgs
}

func TestMarshalRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, s := range testSigners(t) {
		for name, m := range roundTripMessages(t) {
			t.Run(s.SignatureType().String()+"/"+name, func(t *testing.T) {
				if err := SignMessage(ctx, s, m); err != nil {
					t.Fatal(err)
				}
				b, err := m.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				got, err := Unmarshal(b)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(normalise(got), normalise(m)) {
					t.Fatalf("round trip\n got %+v\nwant %+v", got, m)
				}
				if err := VerifySignature(got); err != nil {
					t.Fatalf("decoded message does not verify: %v", err)
				}
				appended, err := m.AppendMarshal([]byte("prefix"))
				if err != nil || string(appended) != "prefix"+string(b) {
					t.Fatalf("AppendMarshal = %x, %v", appended, err)
				}
				if typ, ok := topLevelVarint(t, b, 4); !ok || SignatureType(typ) != s.SignatureType() {
					t.Fatalf("field 4 (signatureType) = %d, present %v; want %d", typ, ok, s.SignatureType())
				}
			})
		}
	}
}

// normalise maps empty and nil byte slices to the same value, as proto3
// does not tell them apart.
func normalise(m *StreamMessage) *StreamMessage {
	c := *m
	if len(c.ID.PublisherID) == 0 {
		c.ID.PublisherID = nil
	}
	switch b := c.Body.(type) {
	case *ContentMessage:
		cc := *b
		if len(cc.Content) == 0 {
			cc.Content = nil
		}
		c.Body = &cc
	case *GroupKeyResponse:
		r := *b
		if len(r.GroupKeys) == 0 {
			r.GroupKeys = nil
		}
		c.Body = &r
	}
	return &c
}

// topLevelVarint returns the value of a varint field of the outer message.
func topLevelVarint(t *testing.T, b []byte, field protowire.Number) (uint64, bool) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if num == field && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatalf("bad varint: %v", protowire.ParseError(n))
			}
			return v, true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			t.Fatalf("bad field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return 0, false
}

// The spec's §1.4 example: the §2.6 vector signed with key 0x…01 and
// encoded field by field. The spec elides the middle of the signature; it is
// the full §2.6 signature.
func TestSpecWireExample(t *testing.T) {
	const wantHex = "0a480a1373747265616d722e6574682f666f6f2f6261721895d49fc2cf312a147e5f4552091a69125d5dfcb7b8c2659029395bdf3214343031" +
		"7a693362383473643634716e3331667465120708f3c29bc2cf31" +
		"1a41" + "e53045adef4e01f7fe11d4b3073c6053688912e4db0ee780c189cd0d128c923457e1f6cbc1e47d9cd57e115afa9eb8524288887777c1056d638b193cae112dda1b" +
		"2001" + "2a0f0a0d7b22666f6f223a22626172227d"
	m := sdkVectorMessage(t)
	if err := SignMessage(context.Background(), keyOne(t), m); err != nil {
		t.Fatal(err)
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 169 {
		t.Errorf("encoding is %d bytes, want 169", len(b))
	}
	if got := hex.EncodeToString(b); got != wantHex {
		t.Fatalf("wire bytes\n got %s\nwant %s", got, wantHex)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	valid, err := testMessage(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	noBody := protowire.AppendTag(nil, 1, protowire.BytesType)
	noBody = protowire.AppendBytes(noBody, []byte{0x0a, 0x01, 'x'})
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty input", nil, "messageId (1) is missing"},
		{"body without message ID", protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), nil), "messageId (1) is missing"},
		{"message ID without body", noBody, "no body"},
		{"truncated", valid[:len(valid)-3], "decode StreamMessage"},
		{"garbage", []byte{0xff, 0xff, 0xff}, "decode StreamMessage"},
		{"invalid UTF-8 stream ID", []byte{0x0a, 0x03, 0x0a, 0x01, 0xff}, "decode StreamMessage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Unmarshal(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Unmarshal = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	m := testMessage(t)
	m.Body = nil
	if _, err := m.Marshal(); err == nil || !strings.Contains(err.Error(), "no body") {
		t.Errorf("Marshal without body = %v", err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMarshalMatchesGeneratedCode(t *testing.T) {
	msgs := roundTripMessages(t)
	empty := ""
	edge := testMessage(t)
	edge.ID.StreamPartition, edge.ID.SequenceNumber, edge.ID.Timestamp = -1, -2, -1<<62
	edge.PrevMsgRef = &MessageRef{}
	edge.Body = &ContentMessage{GroupKeyID: &empty, NewGroupKey: &EncryptedGroupKey{}}
	msgs["negative numbers, empty optional fields"] = edge
	zero := &StreamMessage{Body: &GroupKeyRequest{GroupKeyIDs: []string{"", ""}}}
	msgs["zero message, empty repeated strings"] = zero
	big := testMessage(t)
	big.Body = &ContentMessage{Content: make([]byte, 300_000), ContentType: ContentBinary}
	big.Signature = make([]byte, 4627)
	big.SignatureType = SignatureMLDSA87
	msgs["large content and signature"] = big
	for name, m := range msgs {
		t.Run(name, func(t *testing.T) {
			got, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := pbMarshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("hand-written encoding differs from proto.Marshal\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestMarshalRejectsInvalidUTF8(t *testing.T) {
	bad := "\xff"
	tests := []struct {
		name  string
		edit  func(*StreamMessage)
		field string
	}{
		{"stream ID", func(m *StreamMessage) { m.ID.StreamID = StreamID(bad) }, "messageId.streamId"},
		{"chain ID", func(m *StreamMessage) { m.ID.MsgChainID = bad }, "messageId.messageChainId"},
		{"group key ID", func(m *StreamMessage) { m.Body = &ContentMessage{GroupKeyID: &bad} }, "contentMessage.groupKeyId"},
		{"new group key ID", func(m *StreamMessage) { m.Body = &ContentMessage{NewGroupKey: &EncryptedGroupKey{ID: bad}} }, "contentMessage.newGroupKey.id"},
		{"request ID", func(m *StreamMessage) { m.Body = &GroupKeyRequest{RequestID: bad} }, "groupKeyRequest.requestId"},
		{"requested key ID", func(m *StreamMessage) { m.Body = &GroupKeyRequest{GroupKeyIDs: []string{"ok", bad}} }, "groupKeyRequest.groupKeyIds"},
		{"response request ID", func(m *StreamMessage) { m.Body = &GroupKeyResponse{RequestID: bad} }, "groupKeyResponse.requestId"},
		{"response key ID", func(m *StreamMessage) { m.Body = &GroupKeyResponse{GroupKeys: []EncryptedGroupKey{{ID: bad}}} }, "groupKeyResponse.groupKeys.id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMessage(t)
			tt.edit(m)
			_, err := m.Marshal()
			if err == nil || !strings.Contains(err.Error(), tt.field+" is not valid UTF-8") {
				t.Fatalf("Marshal = %v, want an invalid UTF-8 error naming %s", err, tt.field)
			}
			if _, err := pbMarshal(m); err == nil {
				t.Fatal("proto.Marshal accepts it: the check is stricter than the reference")
			}
		})
	}
}

// pbMarshal is the reference encoder: the generated pb types and
// proto.Marshal. The hand-written encoder must produce the same bytes.
func pbMarshal(m *StreamMessage) ([]byte, error) {
	w, err := toProto(m)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(w)
}

func toProto(m *StreamMessage) (*pb.StreamMessage, error) {
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
