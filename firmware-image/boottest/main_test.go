package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/streamr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// export signs messages with the given payloads and returns them as `bridge export` would, base64-encoded.
func export(t *testing.T, key streamr.Signer, tamper bool, payloads ...string) []byte {
	t.Helper()
	var raw bytes.Buffer
	w := streamr.NewRawWriter(&raw)
	for i, p := range payloads {
		m := &streamr.StreamMessage{
			ID: streamr.MessageID{
				StreamID:   streamr.StreamID(streamr.UserID(key.PublisherID()) + "/sensors/t"),
				Timestamp:  1_700_000_000_000 + int64(i),
				MsgChainID: "chain",
			},
			Body: &streamr.ContentMessage{Content: []byte(p), ContentType: streamr.ContentJSON},
		}
		if err := streamr.SignMessage(context.Background(), key, m); err != nil {
			t.Fatal(err)
		}
		if tamper {
			m.Body.(*streamr.ContentMessage).Content = []byte(`{"t":99}`)
		}
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	return []byte(base64.StdEncoding.EncodeToString(raw.Bytes()) + "\n")
}

func TestVerify(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	self := streamr.UserID(key.PublisherID())
	tests := []struct {
		name      string
		b64       []byte
		publisher string
		wantErr   string
	}{
		{"signed reading found", export(t, key, false, `{"t":1}`, `{"t":21.5}`), self, ""},
		{"publisher compared case-insensitively", export(t, key, false, `{"t":21.5}`), "0x" + strings.ToUpper(self[2:]), ""},
		{"payload missing", export(t, key, false, `{"t":1}`), self, "no message carries"},
		{"other publisher", export(t, other, false, `{"t":21.5}`), self, "publisher"},
		{"tampered content", export(t, key, true, `{"t":21.5}`), self, "signature"},
		{"empty export", []byte("\n"), self, "no messages"},
		{"not base64", []byte("%%%"), self, "base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verify(tt.b64, []byte(`{"t":21.5}`), tt.publisher)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("verify = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
