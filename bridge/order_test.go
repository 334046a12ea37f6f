package bridge

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// memPositions is an in-memory PositionStore.
type memPositions struct {
	mu     sync.Mutex
	states map[string]streamr.ChainState
}

func (m *memPositions) ChainState(key string) (streamr.ChainState, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[key]
	return s, ok, nil
}

func (m *memPositions) SaveChainStates(_ context.Context, states map[string]streamr.ChainState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range states {
		m.states[k] = v
	}
	return nil
}

// chainStart is the first timestamp of test chains: recent, as a live
// publisher's would be.
var chainStart = time.Now().UnixMilli()

// chainMessages builds a chain of n messages: timestamps chainStart, +1, …
func chainMessages(n int) []*streamr.StreamMessage {
	return chainMessagesAt(n, func(i int) int64 { return chainStart + int64(i) })
}

// chainMessagesAt builds a chain of n messages, the i-th at ts(i).
func chainMessagesAt(n int, ts func(i int) int64) []*streamr.StreamMessage {
	part := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/order"}
	chain := streamr.NewChain("chain-1")
	msgs := make([]*streamr.StreamMessage, n)
	for i := range msgs {
		ref, prev := chain.Next(ts(i))
		msgs[i] = &streamr.StreamMessage{
			ID: streamr.MessageID{StreamID: part.Stream, Timestamp: ref.Timestamp, SequenceNumber: ref.SequenceNumber,
				PublisherID: make([]byte, 20), MsgChainID: chain.ID()},
			PrevMsgRef: prev,
			Body:       &streamr.ContentMessage{Content: []byte("{}")},
		}
	}
	return msgs
}

// fakeResender answers from a fixed set of messages, after failing fails times.
type fakeResender struct {
	mu    sync.Mutex
	msgs  []*streamr.StreamMessage
	fails int
	calls int
}

func (r *fakeResender) Resend(_ context.Context, q streamr.ResendQuery) ([]streamr.Envelope, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.fails {
		return nil, streamr.ErrNoPeers
	}
	var out []streamr.Envelope
	for _, m := range r.msgs {
		if ref := m.ID.Ref(); ref.Compare(q.From) >= 0 && ref.Compare(q.UpperBound()) <= 0 && (q.Limit == 0 || len(out) < q.Limit) {
			out = append(out, streamr.Envelope{Msg: m})
		}
	}
	return out, nil
}

type collector struct {
	mu  sync.Mutex
	got []int64
}

func (c *collector) deliver(m *streamr.StreamMessage, _ []byte) {
	c.mu.Lock()
	c.got = append(c.got, m.ID.Timestamp-chainStart)
	c.mu.Unlock()
}

func (c *collector) wait(t *testing.T, n int) []int64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := append([]int64(nil), c.got...)
		c.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runOrderer(t *testing.T, cfg OrderConfig) *Orderer {
	t.Helper()
	cfg.GapFillTimeout, cfg.RetryInterval, cfg.FlushInterval = 30*time.Millisecond, 20*time.Millisecond, 10*time.Millisecond
	o := NewOrderer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return o
}

func TestOrderer(t *testing.T) {
	chainStart = time.Now().UnixMilli() // recent, however long earlier tests took
	msgs := chainMessages(6)
	tests := []struct {
		name     string
		arrive   []int // indexes into msgs, in arrival order
		resender *fakeResender
		want     []int64
	}{
		{"in order", []int{0, 1, 2, 3}, nil, []int64{0, 1, 2, 3}},
		{"duplicates and stale dropped", []int{0, 1, 1, 0, 2}, nil, []int64{0, 1, 2}},
		{"reordered", []int{0, 2, 3, 1, 4}, nil, []int64{0, 1, 2, 3, 4}},
		{"first message of a new chain arrives late", []int{1, 2, 0, 3}, nil, []int64{0, 1, 2, 3}},
		{"gap filled by resend", []int{0, 1, 4, 5}, &fakeResender{msgs: msgs}, []int64{0, 1, 2, 3, 4, 5}},
		{"gap filled after failed requests", []int{0, 3}, &fakeResender{msgs: msgs, fails: 2}, []int64{0, 1, 2, 3}},
		{"gap skipped when nobody has it", []int{0, 3, 4}, &fakeResender{fails: 100}, []int64{0, 3, 4}},
		{"gap skipped without a resender", []int{0, 2}, nil, []int64{0, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := OrderConfig{Name: "test", Positions: &memPositions{states: map[string]streamr.ChainState{}}, MaxGapRequests: 3}
			if tc.resender != nil {
				cfg.Resender = tc.resender
			}
			o := runOrderer(t, cfg)
			var c collector
			for _, i := range tc.arrive {
				if err := o.Add(msgs[i], nil, c.deliver); err != nil {
					t.Fatal(err)
				}
			}
			got := c.wait(t, len(tc.want))
			if len(got) != len(tc.want) {
				t.Fatalf("delivered %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("delivered %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// A restarted subscriber continues from its saved position: what it missed
// while down is filled instead of skipped.
func TestOrdererResumesFromSavedPosition(t *testing.T) {
	chainStart = time.Now().UnixMilli() // recent, however long earlier tests took
	msgs := chainMessages(5)
	positions := &memPositions{states: map[string]streamr.ChainState{}}
	var first collector
	o := NewOrderer(OrderConfig{Name: "test", Positions: positions})
	for _, m := range msgs[:2] {
		if err := o.Add(m, nil, first.deliver); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	restarted := runOrderer(t, OrderConfig{Name: "test", Positions: positions, Resender: &fakeResender{msgs: msgs}})
	var second collector
	if err := restarted.Add(msgs[4], nil, second.deliver); err != nil { // 2 and 3 were missed while down
		t.Fatal(err)
	}
	got := second.wait(t, 3)
	if len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 4 {
		t.Fatalf("after restart delivered %v, want [2 3 4]", got)
	}
}

func TestOrdererBoundsHeldMessages(t *testing.T) {
	chainStart = time.Now().UnixMilli() // recent, however long earlier tests took
	msgs := chainMessages(10)
	o := NewOrderer(OrderConfig{Name: "test", Positions: &memPositions{states: map[string]streamr.ChainState{}}, MaxHeld: 3})
	var c collector
	for _, i := range []int{0, 2, 3, 4, 5} { // 1 is missing; the fourth held message overflows
		if err := o.Add(msgs[i], nil, c.deliver); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.wait(t, 5); len(got) != 5 || got[1] != 2 {
		t.Fatalf("delivered %v, want [0 2 3 4 5] once the bound is hit", got)
	}
}

// A subscriber that starts in the middle of a long-running chain takes it
// up from the first message it sees: what was published before it started
// is a resend question, not a gap.
func TestOrdererJoinsRunningChain(t *testing.T) {
	chainStart = time.Now().UnixMilli() // recent, however long earlier tests took
	started := time.Now().Add(-time.Hour).UnixMilli()
	msgs := chainMessagesAt(8, func(i int) int64 { // 0…4 an hour ago, 5…7 now
		if i < 5 {
			return started + int64(i)
		}
		return chainStart + int64(i)
	})
	o := NewOrderer(OrderConfig{Name: "test", Positions: &memPositions{states: map[string]streamr.ChainState{}}})
	var c collector
	for _, m := range msgs[5:] {
		if err := o.Add(m, nil, c.deliver); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.got) != 3 {
		t.Fatalf("delivered %d of the 3 messages seen, want all at once", len(c.got))
	}
}

// Each delivered message comes with its own bytes, also when it was held.
func TestOrdererKeepsEncodedWithMessage(t *testing.T) {
	chainStart = time.Now().UnixMilli() // recent, however long earlier tests took
	msgs := chainMessages(4)
	o := NewOrderer(OrderConfig{Name: "test", Positions: &memPositions{states: map[string]streamr.ChainState{}}})
	var mismatches int
	check := func(m *streamr.StreamMessage, encoded []byte) {
		d, err := streamr.Unmarshal(encoded)
		if err != nil || d.ID.Ref() != m.ID.Ref() {
			mismatches++
		}
	}
	for _, i := range []int{0, 2, 3, 1} {
		enc, err := msgs[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Add(msgs[i], enc, check); err != nil {
			t.Fatal(err)
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d deliveries carried another message's bytes", mismatches)
	}
}

// A storage node's Orderer drops the newest held messages at the bound
// instead of giving the gap up; resend brings them back.
func TestOrdererKeepGapsRefetchesOverflow(t *testing.T) {
	chainStart = time.Now().UnixMilli() // recent, however long earlier tests took
	msgs := chainMessages(10)
	resender := &fakeResender{msgs: msgs}
	o := runOrderer(t, OrderConfig{Name: "test", Positions: &memPositions{states: map[string]streamr.ChainState{}}, MaxHeld: 3, KeepGaps: true, Resender: resender})
	var c collector
	for _, i := range []int{0, 2, 3, 4, 5, 6, 7} { // 1 is missing; 5, 6 and 7 overflow the bound
		if err := o.Add(msgs[i], nil, c.deliver); err != nil {
			t.Fatal(err)
		}
	}
	got := c.wait(t, 8)
	for i, v := range got {
		if v != int64(i) {
			t.Fatalf("delivered %v, want 0…7 in order with nothing lost", got)
		}
	}
	if len(got) != 8 {
		t.Fatalf("delivered %v, want 0…7", got)
	}
}

// A loss that took a chain's last messages leaves no gap to see: no later
// message names them as its predecessors. After a loss of the partition,
// a quiet chain is probed for what follows its last message.
func TestOrdererProbesQuietChainAfterLoss(t *testing.T) {
	chainStart = time.Now().UnixMilli()
	msgs := chainMessages(10)
	lossAt := time.Now()
	tests := []struct {
		name      string
		loss      time.Time // zero: none
		fails     int
		want      int // delivered
		wantCalls int
	}{
		{"tail lost", lossAt, 0, 10, 1},
		{"no loss: nothing asked", time.Time{}, 0, 7, 0},
		{"publisher unreachable: given up", lossAt, 100, 7, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resender := &fakeResender{msgs: msgs, fails: tt.fails}
			o := runOrderer(t, OrderConfig{Name: "test", Positions: &memPositions{states: map[string]streamr.ChainState{}},
				Resender: resender, MaxGapRequests: 3, LastLoss: func(streamr.StreamPartID) time.Time { return tt.loss }})
			var c collector
			for _, m := range msgs[:7] { // 7, 8 and 9 were lost: the chain's tail
				if err := o.Add(m, nil, c.deliver); err != nil {
					t.Fatal(err)
				}
			}
			c.wait(t, tt.want)
			time.Sleep(300 * time.Millisecond) // room for requests that should not be sent
			got := c.wait(t, 0)
			for i, v := range got {
				if v != int64(i) {
					t.Fatalf("delivered %v, want 0…%d in order", got, tt.want-1)
				}
			}
			resender.mu.Lock()
			calls := resender.calls
			resender.mu.Unlock()
			if len(got) != tt.want || calls != tt.wantCalls {
				t.Fatalf("delivered %v after %d resend requests, want 0…%d after %d", got, calls, tt.want-1, tt.wantCalls)
			}
		})
	}
}
