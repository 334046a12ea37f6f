package overlay

import (
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// slowPolicy admits like AllowList(nil) but takes delay per message:
// a receiver that validates far more slowly than its neighbour publishes.
type slowPolicy struct{ delay time.Duration }

func (s slowPolicy) MayPublish(stream streamr.StreamID, publisher []byte) bool {
	time.Sleep(s.delay)
	return AllowList(nil).MayPublish(stream, publisher)
}

// TestShedInsteadOfOverrun publishes a burst far faster than the
// receiver validates. Without shedding, pubsub's validation queue
// overflows and drops messages silently (an overrun); with it, the
// receiver drops what waited longer than ShedQueueWait (or behind more than
// ShedQueueDepth others) unvalidated,
// counted, and the queue never overflows: every message is delivered or
// shed, none lost uncounted.
func TestShedInsteadOfOverrun(t *testing.T) {
	const n = 8000
	for _, tc := range []struct {
		name  string
		wait  time.Duration
		depth int
	}{
		{"never shed", -1, 0},
		{"shed after 50ms", 50 * time.Millisecond, 0},
		{"shed beyond 1024 queued", 0, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := newPublisher(t)
			part := pub.part(t, 0)
			msgs := make([][]byte, n)
			for i := range msgs {
				msgs[i] = pub.signed(t, part, time.Now().UnixMilli(), int32(i))
			}
			a := startNode(t, loopbackConfig("tcp", nil))
			cfg := loopbackConfig("tcp", a.Addrs())
			cfg.Policy, cfg.ShedQueueWait, cfg.ShedQueueDepth = slowPolicy{delay: time.Millisecond}, tc.wait, tc.depth
			b := startNode(t, cfg)
			var atB collector
			pa := join(t, a, part, nil)
			pb := join(t, b, part, atB.deliver)
			waitFor(t, 20*time.Second, "A to mesh with B", func() bool { return pa.Neighbours() == 1 })

			for i, m := range msgs { // one gossip message each: a batch would go in a few bundles
				if err := pa.Publish(t.Context(), m); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				if i%500 == 499 {
					time.Sleep(20 * time.Millisecond) // 25,000 msg/s: 25x what B validates, within A's send queue
				}
			}
			drops := func(reason string) int { return int(testutil.ToFloat64(pb.m.drops.WithLabelValues(reason))) }
			accounted := func() int { return len(atB.deliveries()) + drops(reasonShed) + drops(reasonQueueFull) }
			for deadline := time.Now().Add(time.Minute); accounted() < n && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			delivered, shed, overflow := len(atB.deliveries()), drops(reasonShed), drops(reasonQueueFull)
			t.Logf("delivered %d, shed %d, dropped by the full validation queue %d; A's send queue dropped %d",
				delivered, shed, overflow, int(testutil.ToFloat64(pa.m.drops.WithLabelValues(reasonSendQueue))))
			if b.LastLoss(part).IsZero() {
				// Without it the gaps of what B lost wait gap_fill_timeout (5 s)
				// before they are asked for, as if gossip had merely reordered.
				t.Errorf("B lost %d messages (shed %d, queue full %d) but LastLoss is zero", shed+overflow, shed, overflow)
			}
			if tc.wait < 0 && tc.depth == 0 {
				if overflow == 0 {
					t.Errorf("the burst did not overflow B's validation queue: the test does not load B enough")
				}
				return
			}
			if overflow > 0 {
				t.Errorf("%d messages dropped by B's full validation queue while shedding: an overrun", overflow)
			}
			if shed == 0 || delivered == 0 {
				t.Errorf("delivered %d, shed %d: want both (B slower than the burst, shedding only the queue's tail)", delivered, shed)
			}
			if accounted() != n {
				t.Errorf("delivered + shed + dropped = %d, want %d", accounted(), n)
			}
		})
	}
}

func TestQueueClock(t *testing.T) {
	now := time.Unix(100, 0)
	q := newQueueClock(func() time.Time { return now })
	joined := &Partition{}
	lookup := func(topic string) *Partition {
		if topic == "joined" {
			return joined
		}
		return nil
	}
	topic := func(s string) *string { return &s }
	ours, other := &pb.Message{Topic: topic("joined")}, &pb.Message{Topic: topic("other")}
	q.arrived(&pubsub.RPC{RPC: pb.RPC{Publish: []*pb.Message{ours, other}}}, lookup)
	now = now.Add(300 * time.Millisecond)
	if got, depth := q.waited(ours); got != 300*time.Millisecond || depth != 1 {
		t.Errorf("waited = %s behind %d, want 300ms behind 1 (itself)", got, depth)
	}
	if got, _ := q.waited(ours); got != 0 {
		t.Errorf("second waited = %s, want 0: the stamp is taken once", got)
	}
	if got, _ := q.waited(other); got != 0 {
		t.Errorf("message of a topic not joined waited %s, want 0 (never stamped)", got)
	}
	for range maxStamps + 1 { // stamps left behind by messages dropped before validation
		q.arrived(&pubsub.RPC{RPC: pb.RPC{Publish: []*pb.Message{{Topic: topic("joined")}}}}, lookup)
	}
	if len(q.stamps) > maxStamps {
		t.Errorf("%d stamps kept, want at most %d", len(q.stamps), maxStamps)
	}
}
