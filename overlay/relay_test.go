package overlay

import (
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// TestRelayAfterDelivery: on a line A — B — C (no DHT, so C reaches A's
// messages only through B), B delivers each message and, after its read
// loop took the decoded copy off pubsub's message (so the gossip cache
// does not keep it alive), still relays the message to C and could serve
// it from that cache. pubsub hands every subscription the same *Message
// and reads only its wire fields after validation; this node subscribes
// once per topic (ErrJoined). Under -race a later pubsub reading
// ValidatorData beside the read loop is reported here.
func TestRelayAfterDelivery(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	line := func(bootstrap []string) Config {
		cfg := loopbackConfig("tcp", bootstrap)
		cfg.DisableDHT = true
		return cfg
	}
	a := startNode(t, line(nil))
	b := startNode(t, line(a.Addrs()))
	c := startNode(t, line(b.Addrs()))
	var atB, atC collector
	pa := join(t, a, part, nil)
	pb := join(t, b, part, atB.deliver)
	pc := join(t, c, part, atC.deliver)
	waitFor(t, 20*time.Second, "the line to form", func() bool {
		return pa.Neighbours() == 1 && pb.Neighbours() == 2 && pc.Neighbours() == 1
	})
	const n = 50
	for i := range n {
		if err := pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), int32(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for name, col := range map[string]*collector{"B": &atB, "C": &atC} {
		waitFor(t, 20*time.Second, "every message at "+name, func() bool { return len(col.deliveries()) == n })
		seen := make(map[int32]bool)
		for _, d := range col.deliveries() {
			seq := d.Msg.ID.SequenceNumber
			if seen[seq] || seq < 0 || seq >= n {
				t.Errorf("%s: sequence number %d duplicated or unknown", name, seq)
			}
			seen[seq] = true
			if err := streamr.VerifySignature(d.Msg); err != nil {
				t.Errorf("%s: message %d: %v", name, seq, err)
			}
			if got, err := streamr.Unmarshal(d.Encoded); err != nil || got.ID.Ref() != d.Msg.ID.Ref() {
				t.Errorf("%s: message %d: its wire form does not decode to it (%v)", name, seq, err)
			}
		}
	}
	if got := pa.Peers(); got != 1 {
		t.Errorf("A has %d peers in the partition, want 1 (B): C's messages must have come through B", got)
	}
}
