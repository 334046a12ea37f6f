package storage

import (
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
	logged, err := s.After(0, 10)
	if err != nil || len(logged) != 3 {
		t.Fatalf("log has %d entries (%v), want 3", len(logged), err)
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
