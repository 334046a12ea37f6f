package storage

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/streamr"
)

var long = flag.Bool("long", false, "run long crash and measurement rounds")

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

// testPart is the stream part most tests write to.
var testPart = mustPart("0x1234567890abcdef1234567890abcdef12345678/sensors/temp#0")

func mustPart(s string) streamr.StreamPartID {
	p, err := streamr.ParseStreamPartID(s)
	if err != nil {
		panic(err)
	}
	return p
}

// running is an open Store with Run going, closed at test cleanup.
func running(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return runStore(t, s)
}

// runStore starts Run on an open Store and closes it at test cleanup.
func runStore(t testing.TB, s *Store) *Store {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func reading(part streamr.StreamPartID, source string, payload string) *Reading {
	return &Reading{
		Part: part, Source: source, ReceivedAt: 1_700_000_000_000, BootNanos: 42e9,
		ContentType: streamr.ContentJSON, Payload: []byte(payload),
	}
}

// signedFor builds a signed message (fake signature) for r at timestamp ts
// with chain ref seqNo, as the bridge's signer would.
func signedFor(t testing.TB, r Reading, ts int64, seqNo int32, prev *streamr.MessageRef) Signed {
	t.Helper()
	sm, err := buildSigned(r, ts, seqNo, prev)
	if err != nil {
		t.Fatal(err)
	}
	return sm
}

func buildSigned(r Reading, ts int64, seqNo int32, prev *streamr.MessageRef) (Signed, error) {
	m := &streamr.StreamMessage{
		ID: streamr.MessageID{
			StreamID: r.Part.Stream, StreamPartition: int32(r.Part.Partition), Timestamp: ts, SequenceNumber: seqNo,
			PublisherID: []byte("publisher-address-20"), MsgChainID: r.Source,
		},
		PrevMsgRef:    prev,
		Signature:     make([]byte, 65),
		SignatureType: streamr.SignatureEVM,
		Body:          &streamr.ContentMessage{Content: r.Payload, ContentType: r.ContentType},
	}
	enc, err := m.Marshal()
	return Signed{ReadingSeq: r.Seq, Envelope: streamr.Envelope{Msg: m, Encoded: enc}}, err
}

func appendAll(t testing.TB, s *Store, n int, payload func(i int) string) []Reading {
	t.Helper()
	out := make([]Reading, n)
	for i := range n {
		r := reading(testPart, "client-1", payload(i))
		if err := s.Append(context.Background(), r, true); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		out[i] = *r
	}
	return out
}

func payloadN(i int) string { return fmt.Sprintf(`{"n":%d}`, i) }

func counterValue(t testing.TB, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
