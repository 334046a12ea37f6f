package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// stepClock is a wall clock the test moves.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *stepClock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// countingHandler counts log records.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// silentResender is a peer set that never has the missing messages.
type silentResender struct{ calls atomic.Int64 }

func (r *silentResender) Resend(context.Context, streamr.ResendQuery) ([]streamr.Envelope, error) {
	r.calls.Add(1)
	return nil, streamr.ErrNoPeers
}

// gappedChains builds, for each of publishers × chainsEach chains, its
// first and third message (the second missing), stamped at ts, with
// their encoded bytes: what a hostile publisher sends to open gaps.
func gappedChains(t *testing.T, publishers, chainsEach int, ts int64) []streamr.Envelope {
	t.Helper()
	part := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/flood"}
	var out []streamr.Envelope
	for p := range publishers {
		pub := make([]byte, 20)
		pub[0], pub[1], pub[2] = byte(p>>16), byte(p>>8), byte(p)
		for c := range chainsEach {
			chain := streamr.NewChain(fmt.Sprintf("flood-%06d-%06d", p, c))
			for i := range 3 {
				ref, prev := chain.Next(ts + int64(i))
				if i == 1 {
					continue
				}
				m := &streamr.StreamMessage{
					ID: streamr.MessageID{StreamID: part.Stream, Timestamp: ref.Timestamp, SequenceNumber: ref.SequenceNumber,
						PublisherID: pub, MsgChainID: chain.ID()},
					PrevMsgRef: prev,
					Body:       &streamr.ContentMessage{Content: []byte(`{"temperature":21.5,"humidity":40}`)},
				}
				enc, err := m.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, streamr.Envelope{Msg: m, Encoded: enc})
			}
		}
	}
	return out
}

// openGaps counts o's chains with a gap open.
func openGaps(o *Orderer) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.chains.byKey {
		if !c.quiet() {
			n++
		}
	}
	return n
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The attack of issue 13: publishers allowed on a stream open thousands
// of gapped chains whose gaps nobody can fill. Before the bounds, 5,000
// chains cost +113 MB, 25,000 gap-fill requests and 30,000 log lines.
// Each case sends its flood twice (the second after the first's gaps were
// given up and its chains went idle) through the real Orderer, with the
// clock moved by the test, and bounds what it costs.
func TestOrdererChainFlood(t *testing.T) {
	tests := []struct {
		name                 string
		publishers, chains   int
		maxChains, maxPerPub int
		wantTracked          int   // chains in memory at most
		maxRequests          int64 // resend requests for both waves, at most
		maxHeap              uint64
	}{
		// One publisher, 5,000 chains: 64 tracked, their gaps asked for
		// together (one request per round, 5 rounds per wave).
		{"one publisher", 1, 5000, 0, 0, DefaultMaxChainsPerPublisher, 2 * 5, 2 << 20},
		// 2,000 publishers of one chain each: the total bound holds; each
		// publisher's gap is its own request, MaxFills at a time.
		{"many publishers", 2000, 1, 256, 0, 256, 2 * 256 * 5, 2 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &stepClock{now: time.Now()}
			logs := &countingHandler{}
			resender := &silentResender{}
			reg := prometheus.NewRegistry()
			o := NewOrderer(OrderConfig{
				Name: "flood", Positions: &memPositions{states: map[string]streamr.ChainState{}}, Resender: resender,
				MaxChains: tc.maxChains, MaxChainsPerPublisher: tc.maxPerPub, KeepGaps: true,
				Now: clock.Now, Logger: slog.New(logs), Registerer: reg,
			})
			ctx := t.Context()
			before := heapInUse()
			var delivered atomic.Int64
			deliver := func(*streamr.StreamMessage, []byte) { delivered.Add(1) }
			var peakTracked int
			var rounds [2]int
			var grown uint64
			for wave := range 2 {
				flood := gappedChains(t, tc.publishers, tc.chains, clock.Now().UnixMilli())
				for _, e := range flood {
					if err := o.Add(e.Msg, e.Encoded, deliver); err != nil {
						t.Fatal(err)
					}
				}
				peakTracked = max(peakTracked, o.Chains())
				if wave == 0 {
					now := heapInUse() // read once: a second read may be higher and wrap the difference
					grown = now - min(before, now)
				}
				flood = nil
				// Run's rounds, 100 ms apart, until every gap was asked for 5
				// times and given up: MaxFills requests at most per round.
				for rounds[wave] = 0; openGaps(o) > 0; rounds[wave]++ {
					if rounds[wave] > 10_000 {
						t.Fatalf("wave %d: %d gaps still open after %d rounds", wave+1, openGaps(o), rounds[wave])
					}
					clock.advance(100 * time.Millisecond)
					o.step(ctx)
					o.fills.Wait()
				}
				clock.advance(DefaultChainIdleTimeout)
				o.step(ctx)
				if n := o.Chains(); n != 0 {
					t.Fatalf("wave %d: %d chains still in memory after the idle timeout, want 0", wave+1, n)
				}
			}
			lines := logs.n.Load()
			refused := testutil.ToFloat64(o.metrics.refused.WithLabelValues("publisher")) + testutil.ToFloat64(o.metrics.refused.WithLabelValues("total"))
			t.Logf("2 waves of %d chains (gaps given up after %v rounds of 100 ms): peak %d tracked, heap +%d KiB after the first, %d resend requests, %d log lines, %d delivered, %.0f refused, %.0f pruned",
				tc.publishers*tc.chains, rounds, peakTracked, grown>>10, resender.calls.Load(), lines, delivered.Load(), refused,
				testutil.ToFloat64(o.metrics.pruned))
			if peakTracked > tc.wantTracked {
				t.Errorf("peak %d chains tracked, want at most %d", peakTracked, tc.wantTracked)
			}
			if c := resender.calls.Load(); c > tc.maxRequests {
				t.Errorf("%d resend requests, want at most %d", c, tc.maxRequests)
			}
			if grown > tc.maxHeap {
				t.Errorf("heap grew %d KiB, want at most %d KiB", grown>>10, tc.maxHeap>>10)
			}
			// Kinds of line: refused, skipped gap, failed request; at most one
			// per kind per 10 s interval, plus the first of each wave.
			seconds := (rounds[0] + rounds[1]) / 10
			if want := int64(3 * (seconds/10 + 2)); lines > want {
				t.Errorf("%d log lines in %d s, want at most %d", lines, seconds, want)
			}
			if want := float64(2 * (tc.publishers*tc.chains - tc.wantTracked)); refused < want {
				t.Errorf("%.0f messages refused at the chain limit, want at least %.0f (counted)", refused, want)
			}
		})
	}
}

// The replay of issue 13: a peer fetched a publisher's 55-second-old "open"
// by resend and sent it to a subscriber that had never seen its chain,
// which delivered it as live. A chain without a position is taken up only
// from a message published since the subscriber started or at most
// LiveMaxAge old; a chain with one catches up whatever the age, and a
// storer (FromChainStart) keeps everything. (The subscriber here started
// just now.)
func TestOrdererUnseenChainAge(t *testing.T) {
	now := time.Now()
	old := func(i int) int64 { return now.Add(-55*time.Second).UnixMilli() + int64(i) }
	fresh := func(i int) int64 { return now.Add(-time.Second).UnixMilli() + int64(i) }
	tests := []struct {
		name      string
		ts        func(int) int64
		positions bool // the subscriber delivered this chain's first message before
		fromStart bool
		maxAge    time.Duration
		want      int // messages delivered
		notLive   float64
	}{
		{"old replay of an unseen chain dropped", old, false, false, 0, 0, 4},
		{"fresh unseen chain taken up", fresh, false, false, 0, 4, 0},
		{"old messages of a known chain caught up", old, true, false, 0, 3, 0},
		{"storer keeps old messages", old, false, true, 0, 4, 0},
		{"bound configurable", old, false, false, time.Minute, 4, 0},
		{"bound off", old, false, false, -1, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs := chainMessagesAt(4, tc.ts)
			positions := &memPositions{states: map[string]streamr.ChainState{}}
			logs := &countingHandler{}
			cfg := OrderConfig{Name: "mqtt", Positions: positions, FromChainStart: tc.fromStart, LiveMaxAge: tc.maxAge,
				Now: func() time.Time { return now }, Logger: slog.New(logs)}
			o := NewOrderer(cfg)
			arrive := msgs // the replayed "open" first, then what followed it
			if tc.positions {
				arrive = msgs[1:]
				ref := msgs[0].ID.Ref()
				positions.states[o.PositionKey(msgs[0])] = streamr.ChainState{ID: msgs[0].ID.MsgChainID, Last: &ref}
			}
			var got atomic.Int64
			for _, m := range arrive {
				if err := o.Add(m, nil, func(*streamr.StreamMessage, []byte) { got.Add(1) }); err != nil {
					t.Fatal(err)
				}
			}
			if int(got.Load()) != tc.want {
				t.Errorf("delivered %d of %d, want %d", got.Load(), len(arrive), tc.want)
			}
			if n := testutil.ToFloat64(o.metrics.notLive); n != tc.notLive {
				t.Errorf("counted %.0f as not live, want %.0f", n, tc.notLive)
			}
			if tc.notLive > 0 && logs.n.Load() != 1 {
				t.Errorf("%d log lines for %0.f refused messages, want 1", logs.n.Load(), tc.notLive)
			}
			if tc.notLive > 0 && o.Chains() != 0 {
				t.Errorf("%d chains tracked for refused messages, want 0", o.Chains())
			}
		})
	}
}

// A chain evicted to make room continues where it was when it comes back:
// nothing delivered twice, nothing skipped, even before its position was
// saved.
func TestOrdererEvictedChainResumes(t *testing.T) {
	now := time.Now()
	a := chainMessagesAt(3, func(i int) int64 { return now.UnixMilli() + int64(i) })
	b := chainMessagesAt(1, func(i int) int64 { return now.UnixMilli() + int64(i) })
	b[0].ID.MsgChainID = "chain-2"
	o := NewOrderer(OrderConfig{Name: "mqtt", Positions: &memPositions{states: map[string]streamr.ChainState{}},
		MaxChainsPerPublisher: 1, Now: func() time.Time { return now }})
	var got []string
	deliver := func(m *streamr.StreamMessage, _ []byte) {
		got = append(got, fmt.Sprintf("%s/%d", m.ID.MsgChainID, m.ID.Timestamp-now.UnixMilli()))
	}
	for _, m := range []*streamr.StreamMessage{a[0], a[1], b[0], a[1], a[2]} { // b evicts a; a's 1 comes again
		if err := o.Add(m, nil, deliver); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"chain-1/0", "chain-1/1", "chain-2/0", "chain-1/2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if n := testutil.ToFloat64(o.metrics.evicted); n != 2 {
		t.Fatalf("%.0f evictions, want 2 (a for b, b for a)", n)
	}
}

type publishedMsg struct {
	topic   string
	payload []byte
}

// capturingBroker is a LocalBroker that records what it is given.
type capturingBroker struct {
	mu  sync.Mutex
	got []publishedMsg
}

func (b *capturingBroker) PublishMarked(topic string, payload []byte, _ byte, _ string, _ []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, publishedMsg{topic, payload})
	return nil
}
func (b *capturingBroker) Mark(string) ([]byte, bool, error) { return nil, false, nil }
func (b *capturingBroker) Sync(context.Context) error        { return nil }

// Through a Deliverer onto local MQTT: a replayed message from before the
// subscriber started never reaches MQTT; one it is owed (published since it
// started) that arrives late is delivered with "history": true in its
// metadata, a live one without.
func TestDeliveryMarksHistory(t *testing.T) {
	start := time.Now()
	clock := &stepClock{now: start}
	o := NewOrderer(OrderConfig{Name: "mqtt", Positions: &memPositions{states: map[string]streamr.ChainState{}}, Now: clock.Now})
	mqtt := &capturingBroker{}
	d := NewDeliverer([]byte("self"), mqtt, o, nil, slog.New(slog.DiscardHandler))
	sub, err := CompileSubscription(SubscribeConfig{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/order", Topic: "{stream}", Metadata: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	receive := d.handler(sub)
	chain := func(id string, ts time.Time) *streamr.StreamMessage {
		m := chainMessagesAt(1, func(int) int64 { return ts.UnixMilli() })[0]
		m.ID.MsgChainID = id
		return m
	}
	receive(chain("live", start), nil)
	clock.advance(5 * time.Minute)
	receive(chain("owed", start.Add(10*time.Second)), nil)     // published after the start, arrives 4:50 late
	receive(chain("replayed", start.Add(-5*time.Minute)), nil) // published before the start
	var history []bool
	for _, p := range mqtt.got {
		var env struct{ Metadata map[string]any }
		if err := json.Unmarshal(p.payload, &env); err != nil {
			t.Fatal(err)
		}
		history = append(history, env.Metadata["history"] == true)
	}
	if fmt.Sprint(history) != "[false true]" {
		t.Fatalf("history marks %v of %d deliveries, want [false true] (live, owed; the replay dropped)", history, len(mqtt.got))
	}
}
