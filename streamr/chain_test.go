package streamr

import (
	"math"
	"regexp"
	"testing"
)

func TestChainNext(t *testing.T) {
	type step struct {
		ts       int64
		want     MessageRef
		wantPrev *MessageRef
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first message has no previous", []step{
			{ts: 1000, want: MessageRef{1000, 0}},
		}},
		{"same millisecond bumps the sequence number", []step{
			{ts: 1000, want: MessageRef{1000, 0}},
			{ts: 1000, want: MessageRef{1000, 1}, wantPrev: &MessageRef{1000, 0}},
			{ts: 1000, want: MessageRef{1000, 2}, wantPrev: &MessageRef{1000, 1}},
		}},
		{"newer timestamp resets the sequence number", []step{
			{ts: 1000, want: MessageRef{1000, 0}},
			{ts: 1000, want: MessageRef{1000, 1}, wantPrev: &MessageRef{1000, 0}},
			{ts: 1001, want: MessageRef{1001, 0}, wantPrev: &MessageRef{1000, 1}},
		}},
		{"clock going backwards is clamped", []step{
			{ts: 5000, want: MessageRef{5000, 0}},
			{ts: 4000, want: MessageRef{5000, 1}, wantPrev: &MessageRef{5000, 0}},
			{ts: 4999, want: MessageRef{5000, 2}, wantPrev: &MessageRef{5000, 1}},
			{ts: 5001, want: MessageRef{5001, 0}, wantPrev: &MessageRef{5000, 2}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChain("chain")
			for i, s := range tt.steps {
				ref, prev := c.Next(s.ts)
				if ref != s.want || !refEqual(prev, s.wantPrev) {
					t.Fatalf("step %d: Next(%d) = %v, %v; want %v, %v", i, s.ts, ref, prev, s.want, s.wantPrev)
				}
			}
		})
	}
}

func TestChainSequenceOverflow(t *testing.T) {
	c, err := RestoreChain(ChainState{ID: "x", Last: &MessageRef{Timestamp: 7, SequenceNumber: math.MaxInt32}})
	if err != nil {
		t.Fatal(err)
	}
	ref, prev := c.Next(7)
	if want := (MessageRef{Timestamp: 8}); ref != want || prev.Compare(ref) >= 0 {
		t.Fatalf("Next after MaxInt32 = %v (prev %v), want %v", ref, prev, want)
	}
}

func TestChainSaveRestore(t *testing.T) {
	c := NewChain(NewChainID())
	var issued []MessageRef
	for _, ts := range []int64{10, 10, 11} {
		ref, _ := c.Next(ts)
		issued = append(issued, ref)
	}
	b, err := c.State().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var st ChainState
	if err := st.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	r, err := RestoreChain(st)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID() != c.ID() {
		t.Fatalf("restored ID %q, want %q", r.ID(), c.ID())
	}
	// A restart with a clock that went back must not reuse any reference.
	for _, ts := range []int64{9, 11, 12} {
		ref, prev := r.Next(ts)
		for _, old := range issued {
			if ref.Compare(old) <= 0 {
				t.Fatalf("restored chain issued %v, not after %v", ref, old)
			}
		}
		if !refEqual(prev, &issued[len(issued)-1]) {
			t.Fatalf("prev = %v, want %v", prev, issued[len(issued)-1])
		}
		issued = append(issued, ref)
	}
}

func TestRestoreChainErrors(t *testing.T) {
	if _, err := RestoreChain(ChainState{}); err == nil {
		t.Error("RestoreChain accepted an empty chain ID")
	}
	var st ChainState
	if err := st.UnmarshalBinary([]byte("{not json")); err == nil {
		t.Error("UnmarshalBinary accepted garbage")
	}
}

func TestChainLastIsACopy(t *testing.T) {
	c := NewChain("x")
	if c.Last() != nil {
		t.Fatal("empty chain has a last reference")
	}
	c.Next(5)
	c.Last().SequenceNumber = 99
	if ref, _ := c.Next(5); ref.SequenceNumber != 1 {
		t.Fatalf("mutating Last() changed the chain: next = %v", ref)
	}
}

func TestNewChainID(t *testing.T) {
	valid := regexp.MustCompile(`^[0-9a-zA-Z]{20}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewChainID()
		if !valid.MatchString(id) {
			t.Fatalf("chain ID %q does not match %s", id, valid)
		}
		if seen[id] {
			t.Fatalf("chain ID %q repeated", id)
		}
		seen[id] = true
	}
}

func refEqual(a, b *MessageRef) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
