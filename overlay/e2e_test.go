package overlay

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// loopbackConfig is a node on 127.0.0.1 with a random port of one
// transport, no LAN multicast and no NAT traversal.
func loopbackConfig(transport string, bootstrap []string) Config {
	addr := "/ip4/127.0.0.1/tcp/0"
	if transport == "quic" {
		addr = "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	return Config{
		ListenAddrs:         []string{addr},
		BootstrapPeers:      bootstrap,
		DisableMDNS:         true,
		DisableRelay:        true,
		DisableHolePunching: true,
		DisableAutoNAT:      true,
		MaxClockSkew:        time.Minute,
	}
}

// startNode starts a node and its Run loop, stopped at test cleanup.
func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	return startNodeWith(t, cfg, 0)
}

func join(t *testing.T, n *Node, part streamr.StreamPartID, deliver func(Delivery)) *Partition {
	t.Helper()
	p, err := n.Join(part, deliver)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEndToEnd runs three real hosts on 127.0.0.1: B and C know only A
// (their bootstrap peer) and find each other through the DHT; a message
// published on A arrives, verified, on B and C, and never echoes to A.
func TestEndToEnd(t *testing.T) {
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) {
			pub := newPublisher(t)
			part := pub.part(t, 0)
			a := startNode(t, loopbackConfig(transport, nil))
			b := startNode(t, loopbackConfig(transport, a.Addrs()))
			c := startNode(t, loopbackConfig(transport, a.Addrs()))

			var atA, atB, atC collector
			pa := join(t, a, part, atA.deliver)
			join(t, b, part, atB.deliver)
			pc := join(t, c, part, atC.deliver)
			waitFor(t, 20*time.Second, "A to mesh with both members", func() bool { return pa.Neighbours() == 2 })
			waitFor(t, 20*time.Second, "C to find B via the DHT", func() bool { return pc.Peers() == 2 })

			const n = 20
			for i := range n {
				if err := pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), int32(i))); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
			for name, col := range map[string]*collector{"B": &atB, "C": &atC} {
				waitFor(t, 10*time.Second, "delivery at "+name, func() bool { return len(col.deliveries()) == n })
				// The overlay does not order (paths and validation workers
				// race); the bridge orders by chain. Every number must arrive once.
				seen := make(map[int32]bool)
				for i, d := range col.deliveries() {
					if seq := d.Msg.ID.SequenceNumber; seen[seq] || seq < 0 || seq >= n {
						t.Errorf("%s: delivery %d: sequence number %d duplicated or unknown", name, i, seq)
					}
					seen[d.Msg.ID.SequenceNumber] = true
					if err := streamr.VerifySignature(d.Msg); err != nil {
						t.Errorf("%s: delivery %d: %v", name, i, err)
					}
					if string(d.Msg.ID.PublisherID) != string(pub.key.PublisherID()) {
						t.Errorf("%s: publisher %x, want %x", name, d.Msg.ID.PublisherID, pub.key.PublisherID())
					}
				}
			}
			if got := len(atA.deliveries()); got != 0 {
				t.Errorf("publisher A got %d of its own messages back", got)
			}
			if got := testutil.ToFloat64(pa.m.out); got != n {
				t.Errorf("A messages_out = %v, want %d", got, n)
			}
			if got := testutil.ToFloat64(pa.m.mesh); got != 2 {
				t.Errorf("A neighbours gauge = %v, want 2", got)
			}
		})
	}
}

func TestPublishWithoutPeers(t *testing.T) {
	pub := newPublisher(t)
	a := startNode(t, loopbackConfig("tcp", nil))
	p := join(t, a, pub.part(t, 0), nil)
	err := p.Publish(t.Context(), pub.signed(t, pub.part(t, 0), time.Now().UnixMilli(), 0))
	if !errors.Is(err, streamr.ErrNoPeers) {
		t.Fatalf("Publish without peers: %v, want streamr.ErrNoPeers", err)
	}
	err = p.Publish(t.Context(), pub.signed(t, pub.part(t, 1), time.Now().UnixMilli(), 0))
	if !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("Publish of another partition's message: %v, want ErrInvalidMessage", err)
	}
	if _, err := a.Join(pub.part(t, 0), nil); !errors.Is(err, ErrJoined) {
		t.Fatalf("second Join: %v, want ErrJoined", err)
	}
}

// rogue is a libp2p peer running plain GossipSub without our validator: it
// forwards whatever it is given.
type rogue struct {
	topic *pubsub.Topic
	sub   *pubsub.Subscription // the raw gossip messages the rogue receives
	id    peer.ID
}

func newRogue(t *testing.T, transport string, target *Node, part *Partition) *rogue {
	t.Helper()
	addr := "/ip4/127.0.0.1/tcp/0"
	if transport == "quic" {
		addr = "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings(addr), libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		h.Close()
	})
	ps, err := pubsub.NewGossipSub(ctx, h,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithFloodPublish(true), // send to every topic peer, mesh or not
		pubsub.WithMessageIdFn(func(m *pb.Message) string { s := sha256.Sum256(m.Data); return string(s[:]) }))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := ps.Join(part.topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tp.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	info := peer.AddrInfo{ID: target.host.ID(), Addrs: target.host.Addrs()}
	if err := h.Connect(t.Context(), info); err != nil {
		t.Fatal(err)
	}
	// The target lists the rogue once the rogue's own stream carried its
	// subscription, and the rogue lists the target once the target's did:
	// only then does the rogue's publish go to the target.
	waitFor(t, 10*time.Second, "the target and the rogue to see each other in the topic", func() bool {
		return slices.Contains(part.t.ListPeers(), h.ID()) && slices.Contains(tp.ListPeers(), target.host.ID())
	})
	return &rogue{topic: tp, sub: sub, id: h.ID()}
}

// TestRoguePeer injects invalid messages from a raw pubsub peer into B,
// which must drop each, count it by reason, not forward it to A, and
// penalise the rogue's score (except for a future timestamp, where the
// fault may be B's clock).
func TestRoguePeer(t *testing.T) {
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) {
			testRoguePeer(t, transport)
		})
	}
}

func testRoguePeer(t *testing.T, transport string) {
	owner := newPublisher(t)
	stranger := newPublisher(t)
	part := owner.part(t, 0)
	now := time.Now().UnixMilli()

	forged := message(t, owner.key, part, owner.chain, now, 0)
	forged.Content().Content = []byte(`{"temp":-40}`)
	oversized := message(t, owner.key, part, owner.chain, now, 1)
	oversized.Content().Content = make([]byte, 8<<10)
	oversized.Content().ContentType = streamr.ContentBinary
	if err := streamr.SignMessage(t.Context(), owner.key, oversized); err != nil {
		t.Fatal(err)
	}
	tooMany := make([][]byte, maxBundleMessages+1)
	for i := range tooMany {
		tooMany[i] = []byte("x")
	}
	tests := []struct {
		name      string
		data      []byte
		reason    string
		penalised bool
	}{
		{"forged content", bundleOf(t, encode(t, forged)), reasonSignature, true},
		{"genuine then forged in one bundle", bundleOf(t, owner.signed(t, part, now, 6), encode(t, forged)), reasonSignature, true},
		{"re-signed by stranger", bundleOf(t, encode(t, message(t, stranger.key, part, "x", now, 0))), reasonPublisher, true},
		{"oversized", bundleOf(t, encode(t, oversized)), reasonSize, true},
		{"wrong topic", bundleOf(t, owner.signed(t, owner.part(t, 1), now, 0)), reasonTopic, true},
		{"not a bundle", []byte("hello"), reasonDecode, true},
		{"undecodable message", bundleOf(t, []byte("hello")), reasonDecode, true},
		{"too many messages", bundleOf(t, tooMany...), reasonDecode, true},
		{"empty bundle", nil, reasonDecode, true},
		{"far future", bundleOf(t, owner.signed(t, part, now+int64(time.Hour/time.Millisecond), 0)), reasonFuture, false},
	}

	cfgA := loopbackConfig(transport, nil)
	cfgA.Limits.MaxMessageBytes = 4 << 10
	a := startNode(t, cfgA)
	cfgB := loopbackConfig(transport, a.Addrs())
	cfgB.Limits.MaxMessageBytes = 4 << 10
	b := startNode(t, cfgB)
	var atA, atB collector
	pa := join(t, a, part, atA.deliver)
	pb := join(t, b, part, atB.deliver)
	waitFor(t, 20*time.Second, "A and B to mesh", func() bool { return pa.Neighbours() == 1 })

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRogue(t, transport, b, pb) // fresh identity: a graylisted rogue is ignored
			drops := pb.m.drops.WithLabelValues(tc.reason)
			before := testutil.ToFloat64(drops)
			if err := r.topic.Publish(t.Context(), tc.data); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "B to count the drop as "+tc.reason, func() bool { return testutil.ToFloat64(drops) == before+1 })
			score := func() float64 {
				if s := b.scores.Load(); s != nil {
					return (*s)[r.id]
				}
				return 0
			}
			if tc.penalised {
				waitFor(t, 5*time.Second, "B to lower the rogue's score", func() bool { return score() <= invalidMessageWeight/2 })
				if got := testutil.ToFloat64(b.metrics.penalised); got < 1 {
					t.Errorf("penalised_peers = %v, want at least the rogue", got)
				}
				return
			}
			time.Sleep(300 * time.Millisecond) // three score snapshots
			if s := score(); s < 0 {
				t.Errorf("rogue penalised (score %v) for a drop that may be our fault", s)
			}
		})
	}

	// A genuine message still flows, and nothing the rogues sent got past B.
	if err := pa.Publish(t.Context(), owner.signed(t, part, now, 5)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the genuine message at B", func() bool { return len(atB.deliveries()) == 1 })
	if got := len(atA.deliveries()); got != 0 {
		t.Errorf("A received %d messages that only rogues sent", got)
	}
	for _, d := range atB.deliveries() {
		if d.From != a.ID() {
			t.Errorf("B delivered a message from %s, not A", d.From)
		}
	}
}
