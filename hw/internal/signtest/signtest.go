// Package signtest checks a key backend the way a subscriber would: it signs
// real Streamr messages with the backend's signer and verifies them with
// streamr.Validate. When TRIBUTARY_CROSSCHECK_DIR is set it also writes the
// signed messages as a raw-format file there, for the @streamr/utils
// cross-check (streamr/testdata/sdkcheck/verify.mjs).
package signtest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

// CrosscheckDirEnv names the directory that receives raw-format files.
const CrosscheckDirEnv = "TRIBUTARY_CROSSCHECK_DIR"

// Messages signs n chained messages with s, checks each with
// streamr.Validate after a marshal/unmarshal round trip, writes them to
// $TRIBUTARY_CROSSCHECK_DIR/<name>.raw when that is set, and returns them.
func Messages(t testing.TB, s streamr.Signer, name string, n int) []*streamr.StreamMessage {
	t.Helper()
	ctx := context.Background()
	chain := streamr.NewChain(streamr.NewChainID())
	var (
		msgs []*streamr.StreamMessage
		raw  bytes.Buffer
	)
	w := streamr.NewRawWriter(&raw)
	for i := range n {
		ref, prev := chain.Next(1_760_000_000_000 + int64(i))
		m := &streamr.StreamMessage{
			ID: streamr.MessageID{
				StreamID:       "0x0123456789abcdef0123456789abcdef01234567/tributary/hw-test",
				Timestamp:      ref.Timestamp,
				SequenceNumber: ref.SequenceNumber,
				MsgChainID:     chain.ID(),
			},
			PrevMsgRef: prev,
			Body: &streamr.ContentMessage{
				Content:     []byte(`{"backend":"` + name + `","n":` + strconv.Itoa(i) + `}`),
				ContentType: streamr.ContentJSON,
			},
		}
		if err := streamr.SignMessage(ctx, s, m); err != nil {
			t.Fatalf("%s: sign message %d: %v", name, i, err)
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatalf("%s: marshal message %d: %v", name, i, err)
		}
		got, err := streamr.Unmarshal(enc)
		if err != nil {
			t.Fatalf("%s: unmarshal message %d: %v", name, i, err)
		}
		if err := streamr.Validate(got, len(enc), streamr.Limits{}); err != nil {
			t.Fatalf("%s: message %d does not validate: %v", name, i, err)
		}
		if !tamperFails(got) {
			t.Fatalf("%s: message %d still verifies after its content was changed", name, i)
		}
		if err := w.Write(m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		msgs = append(msgs, m)
	}
	writeCrosscheck(t, name, raw.Bytes())
	return msgs
}

func writeCrosscheck(t testing.TB, name string, raw []byte) {
	dir := os.Getenv(CrosscheckDirEnv)
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("crosscheck dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".raw"), raw, 0o644); err != nil {
		t.Fatalf("write crosscheck file: %v", err)
	}
}

// tamperFails flips one content byte of m and reports whether verification
// then fails, as it must for any real signature.
func tamperFails(m *streamr.StreamMessage) bool {
	c := *m.Content()
	c.Content = append([]byte(nil), c.Content...)
	c.Content[0] ^= 1
	mm := *m
	mm.Body = &c
	return streamr.VerifySignature(&mm) != nil
}
