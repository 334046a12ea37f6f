package bridge

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// recordingResender answers range queries of one chain from msgs and
// records what it was asked.
type recordingResender struct {
	mu      sync.Mutex
	msgs    []*streamr.StreamMessage
	queries []streamr.ResendQuery
	sent    int
}

func (r *recordingResender) Resend(_ context.Context, q streamr.ResendQuery) ([]streamr.Envelope, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, q)
	var out []streamr.Envelope
	for _, m := range r.msgs {
		if q.Matches(&m.ID) && (q.Limit == 0 || len(out) < q.Limit) {
			out = append(out, streamr.Envelope{Msg: m, Encoded: make([]byte, 100)})
		}
	}
	r.sent += len(out)
	return out, nil
}

// Two Orderers of one partition (as MQTT delivery and storing are) miss
// messages of a chain; through one FillShare, what the first fetched is
// not fetched again for the second, which fetches only what the first
// did not need.
func TestFillShareServesOtherOrderers(t *testing.T) {
	tests := []struct {
		name         string
		missA, missB []int // messages each Orderer never gets over gossip
		maxBytes     int
		wantSent     int // messages the network sent
		wantShared   int // messages the second took from the first's fetch
		wantEvicted  bool
	}{
		{"same gap", []int{4, 5}, []int{4, 5}, 0, 2, 2, false},
		{"second misses more", []int{4, 5}, []int{4, 5, 6}, 0, 3, 2, false},
		{"second misses less", []int{4, 5, 6}, []int{5}, 0, 3, 1, false},
		{"bound hit", []int{4, 5}, []int{4, 5}, 150, 4, 0, true}, // the first of the two dropped: fetched again
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs := chainMessages(10)
			net := &recordingResender{msgs: msgs}
			clock := &stepClock{now: time.Now()}
			share := NewFillShare(net, FillShareConfig{MaxBytes: tc.maxBytes, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
			share.Share(msgs[0].ID.StreamPart())
			share.Share(msgs[0].ID.StreamPart())
			var delivered [2][]int64
			orderers := make([]*Orderer, 2)
			for i, miss := range [][]int{tc.missA, tc.missB} {
				o := NewOrderer(OrderConfig{
					Name: "o", Positions: &memPositions{states: map[string]streamr.ChainState{}}, Resender: share,
					FromChainStart: true, Now: clock.Now, Logger: slog.New(slog.DiscardHandler),
				})
				orderers[i] = o
				for n, m := range msgs {
					if slices.Contains(miss, n) {
						continue
					}
					if err := o.Add(m, nil, func(m *streamr.StreamMessage, _ []byte) {
						delivered[i] = append(delivered[i], m.ID.Timestamp-chainStart)
					}); err != nil {
						t.Fatal(err)
					}
				}
			}
			clock.advance(6 * time.Second) // past GapFillTimeout
			for _, o := range orderers {   // one after the other, as their ticks come
				o.fillGaps(t.Context())
				o.fills.Wait()
			}
			for i := range orderers {
				if want := []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(delivered[i], want) {
					t.Errorf("orderer %d delivered %v, want %v", i, delivered[i], want)
				}
			}
			if net.sent != tc.wantSent {
				t.Errorf("network sent %d messages for queries %+v, want %d", net.sent, net.queries, tc.wantSent)
			}
			if got := int(testutil.ToFloat64(share.shared)); got != tc.wantShared {
				t.Errorf("shared %d messages, want %d", got, tc.wantShared)
			}
			if evicted := testutil.ToFloat64(share.evicted) > 0; evicted != tc.wantEvicted {
				t.Errorf("evicted: %v, want %v", evicted, tc.wantEvicted)
			}
			clock.advance(DefaultFillShareKeep + time.Second)
			share.mu.Lock()
			share.expire()
			left := share.order.Len() + len(share.chains)
			share.mu.Unlock()
			if left != 0 {
				t.Errorf("%d entries kept after the keep time", left)
			}
		})
	}
}

// A gap on one of a publisher's chains is asked for by a range of that
// chain only; gaps on all of them by one range without a chain ID.
func TestOrdererRangePerChain(t *testing.T) {
	for _, tc := range []struct {
		name       string
		gapped     int // of 3 chains
		wantChains []string
	}{
		{"one of three", 1, []string{"chain-0"}},
		{"two of three", 2, []string{"chain-0", "chain-1"}},
		{"all three", 3, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := &recordingResender{}
			clock := &stepClock{now: time.Now()}
			o := NewOrderer(OrderConfig{
				Name: "o", Positions: &memPositions{states: map[string]streamr.ChainState{}}, Resender: net,
				FromChainStart: true, Now: clock.Now, Logger: slog.New(slog.DiscardHandler),
			})
			for j := range 3 {
				msgs := chainMessages(3)
				for n, m := range msgs {
					m.ID.MsgChainID = "chain-" + string(rune('0'+j))
					if j < tc.gapped && n == 1 {
						continue
					}
					if err := o.Add(m, nil, func(*streamr.StreamMessage, []byte) {}); err != nil {
						t.Fatal(err)
					}
				}
			}
			clock.advance(6 * time.Second)
			o.fillGaps(t.Context())
			o.fills.Wait()
			var chains []string
			for _, q := range net.queries {
				chains = append(chains, q.ChainID)
			}
			slices.Sort(chains)
			if !slices.Equal(chains, tc.wantChains) {
				t.Errorf("asked for chains %q, want %q", chains, tc.wantChains)
			}
		})
	}
}
