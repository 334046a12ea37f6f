package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// storeRound commits one message with sequence number seq to each part,
// in the order given. The readings are enqueued together, so that they
// share the store's commits.
func storeRound(t *testing.T, s *storage.Store, parts []streamr.StreamPartID, seq int32) {
	t.Helper()
	readings := make([]*storage.Reading, len(parts))
	waits := make([]func(context.Context) error, len(parts))
	for i, part := range parts {
		readings[i] = &storage.Reading{Part: part, Source: "c", Payload: []byte("{}")}
		wait, err := s.Enqueue(readings[i], true)
		if err != nil {
			t.Fatal(err)
		}
		waits[i] = wait
	}
	var signed []storage.Signed
	for i, part := range parts {
		if err := waits[i](t.Context()); err != nil {
			t.Fatal(err)
		}
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: part.Stream, StreamPartition: int32(part.Partition), Timestamp: 1, SequenceNumber: seq, PublisherID: make([]byte, 20), MsgChainID: "c"},
			Body: &streamr.ContentMessage{Content: []byte("{}")},
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		signed = append(signed, storage.Signed{ReadingSeq: readings[i].Seq, Envelope: streamr.Envelope{Msg: m, Encoded: enc}})
		if len(signed) == 256 || i == len(parts)-1 {
			if err := s.CommitSigned(t.Context(), signed, nil); err != nil {
				t.Fatal(err)
			}
			signed = signed[:0]
		}
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (o *fakeOverlay) totalPublished() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.chains)
}

func (o *fakeOverlay) misused() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.misuse...)
}

// The attack of issue 13: every distinct topic became a partition joined
// for good (3,000 topics, 6,000 goroutines). 3,000 partitions get three
// messages each: never more than max_forward_partitions are joined, every
// message goes out in order, the idle partitions are left once the
// (injected) clock passes partition_idle_timeout, and a partition is
// joined again when it has a new message.
func TestForwarderBoundsJoinedPartitions(t *testing.T) {
	const nParts, rounds, limit = 3000, 3, 128
	s := openStore(t, t.TempDir())
	o := &fakeOverlay{everyone: true, got: map[streamr.StreamPartID][]int32{}}
	parts := make([]streamr.StreamPartID, nParts)
	for i := range parts {
		parts[i] = streamr.StreamPartID{Stream: streamr.StreamID(fmt.Sprintf("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/topic/%d", i))}
	}
	clock := &stepClock{now: time.Now()}
	reg := prometheus.NewRegistry()
	f, stop := startForwarder(t, s, o, ForwardConfig{
		MaxPartitions: limit, IdleTimeout: 10 * time.Minute, Now: clock.Now,
		Registerer: reg, Logger: slog.New(slog.DiscardHandler),
	})
	defer stop()
	for r := range rounds {
		storeRound(t, s, parts, int32(r))
		f.Notify()
		waitFor(t, fmt.Sprintf("round %d forwarded", r), func() bool { return o.totalPublished() == (r+1)*nParts })
	}
	if now, most := o.joinedNow(); most > limit || now > limit {
		t.Fatalf("%d partitions joined at most (%d now), limit %d", most, now, limit)
	}
	for _, part := range parts {
		got := o.published(part)
		if len(got) != rounds || got[0] != 0 || got[1] != 1 || got[2] != 2 {
			t.Fatalf("%s: published %v, want [0 1 2]", part, got)
		}
	}
	if f.HoldingBack() || len(f.HeldParts()) != 0 {
		t.Errorf("forwarder holds messages back with peers everywhere: %v", f.HeldParts())
	}
	// Every message needs a join but those of partitions still joined from
	// the round before: at most limit per round (which ones depends on
	// when the forwarder's passes run while a round is stored).
	if n := testutil.ToFloat64(f.left.WithLabelValues("cap")); n < (nParts-limit)*rounds {
		t.Errorf("%v partitions left at the limit, want at least %d", n, (nParts-limit)*rounds)
	}

	clock.advance(10*time.Minute - time.Second)
	f.Notify()
	time.Sleep(50 * time.Millisecond) // five retry intervals for an early leave to show
	if now, _ := o.joinedNow(); now != limit {
		t.Fatalf("%d partitions joined before the idle timeout, want %d", now, limit)
	}
	clock.advance(time.Second)
	f.Notify()
	waitFor(t, "idle partitions left", func() bool { now, _ := o.joinedNow(); return now == 0 })
	if n := testutil.ToFloat64(f.left.WithLabelValues("idle")); n != limit {
		t.Errorf("%v partitions left idle, want %d", n, limit)
	}

	storeRound(t, s, parts[:1], rounds)
	f.Notify()
	waitFor(t, "rejoined partition forwarded", func() bool { return len(o.published(parts[0])) == rounds+1 })
	if now, _ := o.joinedNow(); now != 1 {
		t.Errorf("%d partitions joined after one new message, want 1", now)
	}
	if m := o.misused(); len(m) > 0 {
		t.Fatalf("overlay misused: %v", m[:min(3, len(m))])
	}
	if got := testutil.ToFloat64(f.joinedLen); got != 1 {
		t.Errorf("tributary_forward_partitions = %v, want 1", got)
	}
}

// At the limit with every joined partition holding messages back for want
// of peers, a new partition's messages stay in storage, counted and logged
// once; once the joined ones have held back for partition_idle_timeout,
// they take turns with it, so partitions nobody listens to cannot keep
// the others out for good; nothing is lost on the way.
func TestForwarderHoldsBackAtPartitionLimit(t *testing.T) {
	s := openStore(t, t.TempDir())
	mk := func(name string) streamr.StreamPartID {
		return streamr.StreamPartID{Stream: streamr.StreamID("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/" + name)}
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	o := &fakeOverlay{peers: map[streamr.StreamPartID]bool{c: true}, got: map[streamr.StreamPartID][]int32{}}
	storeRound(t, s, []streamr.StreamPartID{a, b}, 0)
	logs := &countingHandler{}
	clock := &stepClock{now: time.Now()}
	f, stop := startForwarder(t, s, o, ForwardConfig{MaxPartitions: 2, IdleTimeout: time.Minute, Now: clock.Now,
		Logger: slog.New(logs), LogInterval: time.Hour})
	defer stop()
	waitFor(t, "a and b joined", func() bool { now, _ := o.joinedNow(); return now == 2 })
	storeRound(t, s, []streamr.StreamPartID{c}, 0)
	f.Notify()
	waitFor(t, "joins refused at the limit", func() bool { return testutil.ToFloat64(f.refused) >= 5 })
	if got := o.published(c); len(got) != 0 {
		t.Fatalf("partition beyond the limit published %v", got)
	}
	if !f.HoldingBack() {
		t.Error("HoldingBack is false with a partition held at the limit")
	}
	if held := f.HeldParts(); len(held) != 2 || held[a].IsZero() || held[b].IsZero() {
		t.Errorf("HeldParts = %v, want a and b (joined, without peers)", held)
	}
	if n := logs.n.Load(); n != 1 {
		t.Errorf("%d log lines for %v refusals, want 1", n, testutil.ToFloat64(f.refused))
	}

	clock.advance(time.Minute) // a and b held back for partition_idle_timeout
	f.Notify()
	waitFor(t, "held partition forwarded", func() bool { return len(o.published(c)) == 1 })
	o.setPeers(a, true)
	o.setPeers(b, true)
	waitFor(t, "a and b forwarded", func() bool { return len(o.published(a)) == 1 && len(o.published(b)) == 1 })
	if _, most := o.joinedNow(); most > 2 {
		t.Errorf("%d partitions joined at once, limit 2", most)
	}
	if m := o.misused(); len(m) > 0 {
		t.Fatalf("overlay misused: %v", m)
	}
}
