package storage

import (
	"bytes"
	"math"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

func TestStoreReceivedSkipsDuplicates(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	part := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/in"}
	msg := func(ts int64) streamr.Envelope {
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: part.Stream, Timestamp: ts, PublisherID: make([]byte, 20), MsgChainID: "c"},
			Body: &streamr.ContentMessage{Content: []byte("{}")},
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return streamr.Envelope{Msg: m, Encoded: enc}
	}
	tests := []struct {
		batch []streamr.Envelope
		want  int
	}{
		{[]streamr.Envelope{msg(1), msg(2)}, 2},
		{[]streamr.Envelope{msg(2), msg(3)}, 1}, // 2 is a duplicate
		{[]streamr.Envelope{msg(1)}, 0},
	}
	for i, tc := range tests {
		n, err := s.StoreReceived(t.Context(), tc.batch, nil)
		if err != nil || n != tc.want {
			t.Fatalf("batch %d: stored %d, %v; want %d", i, n, err, tc.want)
		}
	}
	count := 0
	if err := s.Messages(part, 0, math.MaxInt64, func([]byte) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	if count != 3 {
		t.Fatalf("%d messages stored, want 3", count)
	}
	stored := [][]byte{tests[0].batch[0].Encoded, tests[0].batch[1].Encoded, tests[1].batch[1].Encoded}
	// Apps following the log read other publishers' messages; the
	// forwarder only steps over them.
	for name, after := range map[string]func(uint64, int) ([]Logged, error){"After": s.After, "OwnAfter": s.OwnAfter} {
		logged, err := after(0, 10)
		if err != nil || len(logged) != 3 {
			t.Fatalf("%s: log has %d entries (%v), want 3", name, len(logged), err)
		}
		for i, l := range logged {
			var want []byte // OwnAfter: positions only
			if name == "After" {
				want = stored[i]
			}
			if l.ReadingSeq != 0 || !bytes.Equal(l.Encoded, want) || (want == nil) != (l.Encoded == nil) {
				t.Errorf("%s: received message at %d listed with reading %d and %d encoded bytes; want reading 0 and %d bytes", name, l.Pos, l.ReadingSeq, len(l.Encoded), len(want))
			}
		}
	}
	state := streamr.ChainState{ID: "c", Last: &streamr.MessageRef{Timestamp: 3}}
	if err := s.SaveChainStates(t.Context(), map[string]streamr.ChainState{"delivered/x": state}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.ChainState("delivered/x")
	if err != nil || !ok || got.Last == nil || *got.Last != *state.Last {
		t.Fatalf("saved state read back as %+v, %v, %v", got, ok, err)
	}
}
