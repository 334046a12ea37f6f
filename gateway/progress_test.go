package gateway

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// Frames are counted whatever the writes' boundaries: a header or a body
// may be split across writes, and a write may hold many frames.
func TestExportProgressCountsFrames(t *testing.T) {
	var stream bytes.Buffer
	for _, body := range []string{"a", "", "hello world", strings.Repeat("x", 70000)} {
		_ = binary.Write(&stream, binary.BigEndian, uint32(len(body)))
		stream.WriteString(body)
	}
	raw := stream.Bytes()
	for _, chunk := range []int{1, 3, 5, 4096, len(raw)} {
		var out, term bytes.Buffer
		p := newExportProgress(&out, &term)
		for b := raw; len(b) > 0; {
			k := min(chunk, len(b))
			if _, err := p.Write(b[:k]); err != nil {
				t.Fatal(err)
			}
			b = b[k:]
		}
		p.Done()
		if p.messages != 4 || !bytes.Equal(out.Bytes(), raw) || !strings.Contains(term.String(), "exported 4 messages") {
			t.Errorf("writes of %d: %d messages, terminal %q", chunk, p.messages, term.String())
		}
	}
}
