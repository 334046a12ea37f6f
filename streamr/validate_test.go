package streamr

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ctx := context.Background()
	key := keyOne(t)
	gk := "gk-1"
	empty := ""
	tests := []struct {
		name    string
		edit    func(*StreamMessage) // applied before signing
		after   func(*StreamMessage) // applied after signing
		size    int
		lim     Limits
		wantErr string
	}{
		{name: "valid JSON"},
		{name: "valid binary", edit: func(m *StreamMessage) { m.Body = &ContentMessage{Content: []byte{0xff}, ContentType: ContentBinary} }},
		{name: "valid AES", edit: func(m *StreamMessage) {
			m.Body = &ContentMessage{Content: []byte("not json"), EncryptionType: EncryptionAES, GroupKeyID: &gk}
		}},
		{name: "valid group key request", edit: func(m *StreamMessage) { m.Body = &GroupKeyRequest{RequestID: "r"} }},
		{name: "invalid stream ID", edit: func(m *StreamMessage) { m.ID.StreamID = "streamr.eth/a b" }, wantErr: "character ' '"},
		{name: "partition too big", edit: func(m *StreamMessage) { m.ID.StreamPartition = 100 }, wantErr: "partition 100: must be 0 to 99"},
		{name: "negative partition", edit: func(m *StreamMessage) { m.ID.StreamPartition = -1 }, wantErr: "partition -1"},
		{name: "negative timestamp", edit: func(m *StreamMessage) { m.ID.Timestamp = -1; m.PrevMsgRef = nil }, wantErr: "negative timestamp"},
		{name: "negative sequence number", edit: func(m *StreamMessage) { m.ID.SequenceNumber = -1; m.PrevMsgRef = nil }, wantErr: "negative timestamp or sequence number"},
		{name: "empty chain ID", edit: func(m *StreamMessage) { m.ID.MsgChainID = "" }, wantErr: "empty message chain ID"},
		{name: "empty publisher", after: func(m *StreamMessage) { m.ID.PublisherID = nil }, wantErr: "empty publisher ID"},
		{name: "previous ref equal", edit: func(m *StreamMessage) { m.PrevMsgRef = &MessageRef{m.ID.Timestamp, m.ID.SequenceNumber} }, wantErr: "is not before the message"},
		{name: "previous ref after", edit: func(m *StreamMessage) { m.PrevMsgRef = &MessageRef{m.ID.Timestamp + 1, 0} }, wantErr: "is not before the message"},
		{name: "no body", after: func(m *StreamMessage) { m.Body = nil }, wantErr: "no body"},
		{name: "encoded size over default", size: DefaultMaxFrame + 1, wantErr: "encoded size 1048577 exceeds"},
		{name: "encoded size over limit", size: 101, lim: Limits{MaxMessageBytes: 100}, wantErr: "exceeds the limit of 100 bytes"},
		{name: "content over limit", lim: Limits{MaxContentBytes: 5}, wantErr: "content size"},
		{name: "invalid JSON", edit: func(m *StreamMessage) { m.Body = &ContentMessage{Content: []byte("{")} }, wantErr: "JSON content does not parse"},
		{name: "AES without group key", edit: func(m *StreamMessage) {
			m.Body = &ContentMessage{Content: []byte("x"), EncryptionType: EncryptionAES}
		}, wantErr: "without a group key ID"},
		{name: "AES with empty group key", edit: func(m *StreamMessage) {
			m.Body = &ContentMessage{Content: []byte("x"), EncryptionType: EncryptionAES, GroupKeyID: &empty}
		}, wantErr: "without a group key ID"},
		{name: "unknown encryption", edit: func(m *StreamMessage) { m.Body = &ContentMessage{Content: []byte("{}"), EncryptionType: 7} }, wantErr: "unknown encryption type 7"},
		{name: "unknown content type", edit: func(m *StreamMessage) { m.Body = &ContentMessage{Content: []byte("{}"), ContentType: 3} }, wantErr: "unknown content type 3"},
		{name: "bad signature", after: func(m *StreamMessage) { m.ID.SequenceNumber++ }, wantErr: "signature does not match"},
		{name: "legacy signature", after: func(m *StreamMessage) { m.SignatureType = SignatureLegacy }, wantErr: "not accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMessage(t)
			if tt.edit != nil {
				tt.edit(m)
			}
			if err := SignMessage(ctx, key, m); err != nil {
				t.Fatal(err)
			}
			if tt.after != nil {
				tt.after(m)
			}
			err := Validate(m, tt.size, tt.lim)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
			if tt.name == "bad signature" && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Validate = %v, want it to wrap ErrBadSignature", err)
			}
		})
	}
}
