package bridge

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

// FuzzMessageObject: any stored bytes become one valid JSON element of a
// format=object answer, or an error; never a panic or broken JSON.
func FuzzMessageObject(f *testing.F) {
	for _, content := range []string{`{"a":1}`, `not json`, ``} {
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: "0x1234567890123456789012345678901234567890/a", Timestamp: 5, PublisherID: make([]byte, 20), MsgChainID: "c"},
			Body: &streamr.ContentMessage{Content: []byte(content)},
		}
		if b, err := m.Marshal(); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, encoded []byte) {
		var buf bytes.Buffer
		a := &jsonArrayWriter{w: &buf}
		if err := a.WriteFrame(encoded); err != nil {
			return
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		var out []MessageObject
		// Encrypted content without a key is left out, never written.
		if err := json.Unmarshal(buf.Bytes(), &out); err != nil || len(out) != 1-a.undecrypted {
			t.Fatalf("answer %q: %v", buf.Bytes(), err)
		}
	})
}
