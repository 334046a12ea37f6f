package storage

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

func TestMessagesOrderAndRange(t *testing.T) {
	s := running(t, Options{})
	other := mustPart("0x1234567890abcdef1234567890abcdef12345678/sensors/temp#1")
	// Stored out of order; want order (ts, seq, publisher, chain).
	type msgSpec struct {
		ts    int64
		seq   int32
		pub   string
		chain string
	}
	specs := []msgSpec{
		{2000, 0, "pub-b", "a"},
		{1000, 1, "pub-a", "a"},
		{2000, 0, "pub-a", "z"},
		{-5, 0, "pub-a", "a"},
		{1000, 0, "pub-a", "a"},
		{2000, 0, "pub-a", "b"},
		{2000, 0, "pub\x00", "b"}, // NUL in the publisher sorts first
		{3000, 0, "pub-a", "a"},
	}
	want := []int{3, 4, 1, 6, 5, 2, 0, 7} // indexes of specs in resend order
	rs := appendAll(t, s, len(specs)+1, payloadN)
	var msgs []Signed
	for i, sp := range specs {
		m := signedFor(t, rs[i], sp.ts, sp.seq, nil)
		m.Msg.ID.PublisherID, m.Msg.ID.MsgChainID = []byte(sp.pub), sp.chain
		m.Encoded = nil // re-marshalled by CommitSigned
		msgs = append(msgs, m)
	}
	otherReading := rs[len(specs)]
	otherReading.Part = other
	msgs = append(msgs, signedFor(t, otherReading, 1500, 0, nil))
	if err := s.CommitSigned(context.Background(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		part     streamr.StreamPartID
		from, to int64
		want     []int
	}{
		{"all", testPart, math.MinInt64, math.MaxInt64, want},
		{"inclusive bounds", testPart, 1000, 2000, want[1:7]},
		{"single ms", testPart, 2000, 2000, want[3:7]},
		{"empty range", testPart, 1001, 1999, nil},
		{"reversed", testPart, 3000, 1000, nil},
		{"negative ts", testPart, -10, 0, want[:1]},
		{"other part", other, 0, math.MaxInt64, []int{len(specs)}},
		{"unknown part", mustPart("a.eth/x#3"), 0, math.MaxInt64, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			err := s.Messages(tc.part, tc.from, tc.to, func(enc []byte) error {
				m, err := streamr.Unmarshal(enc)
				if err != nil {
					return err
				}
				got = append(got, slices.IndexFunc(msgs, func(sm Signed) bool {
					return sm.Msg.ID.Ref() == m.ID.Ref() && string(sm.Msg.ID.PublisherID) == string(m.ID.PublisherID) && sm.Msg.ID.MsgChainID == m.ID.MsgChainID && sm.Msg.ID.StreamPartition == m.ID.StreamPartition
				}))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got messages %v, want %v", got, tc.want)
			}
		})
	}
	stop := errors.New("stop")
	calls := 0
	err := s.Messages(testPart, math.MinInt64, math.MaxInt64, func([]byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("callback error: got %v after %d calls", err, calls)
	}
	parts, err := s.Parts()
	if err != nil || !slices.Equal(parts, []streamr.StreamPartID{testPart, other}) {
		t.Fatalf("parts = %v, %v", parts, err)
	}
}

// TestCommitSignedAllOrNothing fails a batch on its last message and checks
// that none of it was stored.
func TestCommitSignedAllOrNothing(t *testing.T) {
	s := running(t, Options{})
	rs := appendAll(t, s, 3, payloadN)
	ghost := rs[2]
	ghost.Seq = 999 // never appended
	msgs := []Signed{signedFor(t, rs[0], 1, 0, nil), signedFor(t, rs[1], 2, 0, nil), signedFor(t, ghost, 3, 0, nil)}
	chains := map[string]streamr.ChainState{"k": {ID: "chain"}}
	err := s.CommitSigned(context.Background(), msgs, chains)
	if !errors.Is(err, ErrNotPending) {
		t.Fatalf("err = %v, want ErrNotPending", err)
	}
	if logged, err := s.After(0, 10); err != nil || len(logged) != 0 {
		t.Fatalf("after failed commit: %d messages logged, %v", len(logged), err)
	}
	if pend, err := s.Pending(0, 10); err != nil || len(pend) != 3 {
		t.Fatalf("after failed commit: %d pending, %v", len(pend), err)
	}
	if _, ok, _ := s.ChainState("k"); ok {
		t.Fatal("chain state saved by a failed commit")
	}
	if parts, _ := s.Parts(); len(parts) != 0 {
		t.Fatalf("parts after failed commit: %v", parts)
	}
	// The position counter did not move either.
	if err := s.CommitSigned(context.Background(), msgs[:2], chains); err != nil {
		t.Fatal(err)
	}
	if logged, _ := s.After(0, 10); len(logged) != 2 || logged[0].Pos != 1 {
		t.Fatalf("after good commit: %+v", logged)
	}
}
