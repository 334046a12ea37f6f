package overlay

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
)

// The attacks of issue 13's "hostile overlay peers", each repeated by a
// plain go-libp2p host speaking GossipSub or the resend protocol to a
// real node on 127.0.0.1.

// hostileHost is a bare libp2p host on 127.0.0.1, closed at cleanup.
func hostileHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func addrInfo(n *Node) peer.AddrInfo { return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()} }

// logLines counts the log records with a given message.
type logLines struct {
	mu    sync.Mutex
	count map[string]int
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count == nil {
		l.count = make(map[string]int)
	}
	l.count[r.Message]++
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) lines(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count[msg]
}

func refusedCount(n *Node, rule string) float64 {
	return testutil.ToFloat64(n.metrics.refused.count.WithLabelValues(rule))
}

// writeRPC writes one length-delimited GossipSub RPC.
func writeRPC(t *testing.T, s network.Stream, rpc *pb.RPC) {
	t.Helper()
	b, err := proto.Marshal(rpc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...)); err != nil {
		t.Fatal(err)
	}
}

func subscriptions(prefix string, from, n int) []*pb.RPC_SubOpts {
	out := make([]*pb.RPC_SubOpts, n)
	yes := true
	for i := range out {
		topic := fmt.Sprintf("%s%d#0", prefix, from+i)
		out[i] = &pb.RPC_SubOpts{Topicid: &topic, Subscribe: &yes}
	}
	return out
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSubscriptionFlood: one connection announces 600,000 GossipSub
// topics (200,000 under -race or -short; it grew the heap 19 → 255 MB). The node keeps at most
// max_peer_topics of them, of RPCs announcing more at once only its own
// topics, none outside its naming scheme, counts and logs once, and still
// carries a legitimate peer's messages.
func TestSubscriptionFlood(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	var logs logLines
	cfg := loopbackConfig("tcp", nil)
	cfg.DisableDHT = true
	cfg.Logger, cfg.LogRepeatInterval = slog.New(&logs), time.Hour // "once" even on a slow machine
	c := startNode(t, cfg)
	a := startNode(t, loopbackConfig("tcp", c.Addrs()))
	var atC collector
	pc := join(t, c, part, atC.deliver)
	pa := join(t, a, part, nil)
	waitFor(t, 20*time.Second, "A and C to mesh", func() bool { return pa.Neighbours() == 1 })

	h := hostileHost(t)
	// A GossipSub peer as far as C can tell: it takes C's stream (and
	// reads nothing), so C keeps its subscriptions.
	h.SetStreamHandler(pubsub.GossipSubID_v11, func(s network.Stream) { <-t.Context().Done(); s.Reset() })
	if err := h.Connect(t.Context(), addrInfo(c)); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(t.Context(), c.host.ID(), pubsub.GossipSubID_v11)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()

	const (
		perPeerRPCs, perPeerBatch = 100, 1000 // 100,000 topics of our scheme, under the per-RPC cap
		bulkBatch                 = 5000      // then RPCs over it: 500,000 more topics
	)
	bulkRPCs := 100
	if raceEnabled || testing.Short() {
		bulkRPCs = 20 // 200,000 topics in all: decoding them under -race took 24 s
	}
	prefix := topicPrefix + string(pub.stream) + "-"
	yes := true
	before := liveHeap()
	start := time.Now()
	for i := range perPeerRPCs {
		writeRPC(t, s, &pb.RPC{Subscriptions: subscriptions(prefix, i*perPeerBatch, perPeerBatch)})
	}
	for i := range bulkRPCs {
		subs := subscriptions(prefix, (perPeerRPCs+i)*bulkBatch, bulkBatch)
		if i == 0 { // one of C's own topics among them is kept
			subs = append(subs, &pb.RPC_SubOpts{Topicid: &pc.topic, Subscribe: &yes})
		}
		writeRPC(t, s, &pb.RPC{Subscriptions: subs})
	}
	writeRPC(t, s, &pb.RPC{Subscriptions: subscriptions("/other/", 0, 10)}) // not our scheme

	max := DefaultMaxPeerTopics
	waitFor(t, 60*time.Second, "C to process the flood", func() bool {
		return refusedCount(c, ruleTopicsPerRPC) == float64(bulkRPCs*bulkBatch) && refusedCount(c, ruleTopicName) == 10
	})
	took := time.Since(start)
	grown := int64(liveHeap()) - int64(before)
	t.Logf("%d announced topics processed in %s; live heap %+.1f MiB", perPeerRPCs*perPeerBatch+bulkRPCs*bulkBatch+11,
		took.Round(time.Millisecond), float64(grown)/(1<<20))
	if got, want := refusedCount(c, ruleTopicsPerPeer), float64(perPeerRPCs*perPeerBatch-max); got != want {
		t.Errorf("topics_per_peer refusals = %v, want %v", got, want)
	}
	if got := c.subs.tracked(h.ID()); got != max {
		t.Errorf("tracked subscriptions of the flooding peer = %d, want max_peer_topics %d", got, max)
	}
	const bound = 32 << 20
	if grown > bound {
		t.Errorf("live heap grew %d MiB during the flood, bound %d MiB", grown>>20, bound>>20)
	}
	for _, msg := range []string{
		"peer announced more subscriptions at once than max_peer_topics: only those of joined topics kept",
		"peer subscribed to more topics than max_peer_topics: ignored",
	} {
		if got := logs.lines(msg); got != 1 {
			t.Errorf("%q logged %d times, want once", msg, got)
		}
	}

	// The legitimate member is still served.
	if err := pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's message at C", func() bool { return len(atC.deliveries()) == 1 })
	if pc.Peers() != 2 {
		t.Errorf("C lists %d peers in the partition, want A and the flooding peer, whose joined topic was kept", pc.Peers())
	}
}

func TestSubscriptionFilterNames(t *testing.T) {
	pub := newPublisher(t)
	f := newSubscriptionFilter(4, func(string) bool { return false }, newRefusals(slog.New(&logLines{}), time.Second))
	long := topicPrefix + string(pub.stream) + string(bytes.Repeat([]byte("x"), 600)) + "#0"
	tests := []struct {
		topic string
		want  bool
	}{
		{topicName(pub.part(t, 7)), true},
		{topicPrefix + "not-a-stream#0", false},
		{topicPrefix + string(pub.stream) + "#100", false},
		{"/meshsub/" + string(pub.stream) + "#0", false},
		{long, false},
	}
	for _, tc := range tests {
		if got := f.CanSubscribe(tc.topic); got != tc.want {
			t.Errorf("CanSubscribe(%.60q) = %v, want %v", tc.topic, got, tc.want)
		}
	}
}

// TestForgedCopyCannotPoisonGenuine: a stranger sends C copies of A's
// messages with altered content but A's message ID and signature, before
// A publishes them. C rejects the copies and penalises the stranger, then
// delivers A's genuine messages and does not penalise A (with an ID of
// Streamr message ID + signature, C dropped them as duplicates of rejected
// messages and graylisted A).
func TestForgedCopyCannotPoisonGenuine(t *testing.T) {
	owner := newPublisher(t)
	part := owner.part(t, 0)
	a := startNode(t, loopbackConfig("tcp", nil))
	c := startNode(t, loopbackConfig("tcp", a.Addrs()))
	var atC collector
	pa := join(t, a, part, nil)
	pc := join(t, c, part, atC.deliver)
	waitFor(t, 20*time.Second, "A and C to mesh", func() bool { return pa.Neighbours() == 1 })
	stranger := newRogue(t, "tcp", c, pc)

	const n = 5
	now := time.Now().UnixMilli()
	genuine := make([][]byte, n)
	for i := range genuine {
		m := message(t, owner.key, part, owner.chain, now, int32(i))
		genuine[i] = encode(t, m)
		m.Content().Content = []byte(`{"temp":-40}`) // same ID and signature, other content
		if err := stranger.topic.Publish(t.Context(), bundleOf(t, encode(t, m))); err != nil {
			t.Fatal(err)
		}
	}
	forged := pc.m.drops.WithLabelValues(reasonSignature)
	score := func(id peer.ID) float64 {
		if s := c.scores.Load(); s != nil {
			return (*s)[id]
		}
		return 0
	}
	// Every copy rejected, or C graylisted the stranger after some of them
	// (its score fell below the graylist threshold, so C ignores the rest).
	waitFor(t, 10*time.Second, "C to reject the forged copies", func() bool {
		got := testutil.ToFloat64(forged)
		return got == n || got > 0 && score(stranger.id) < 0
	})

	start := time.Now()
	if _, err := pa.PublishBatch(t.Context(), genuine); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's genuine messages at C", func() bool { return len(atC.deliveries()) == n })
	t.Logf("genuine messages delivered %s after publishing", time.Since(start).Round(time.Millisecond))
	for i, d := range atC.deliveries() {
		if d.From != a.ID() || !bytes.Equal(d.Encoded, genuine[d.Msg.ID.SequenceNumber]) {
			t.Errorf("delivery %d: from %s, not the genuine bytes from A", i, d.From)
		}
	}
	waitFor(t, 5*time.Second, "C to penalise the stranger", func() bool { return score(stranger.id) < 0 })
	time.Sleep(300 * time.Millisecond) // three score snapshots
	if s := score(a.host.ID()); s < 0 {
		t.Errorf("A penalised at C (score %v) for its genuine messages", s)
	}
}

// TestConnectionExhaustion: fresh identities took all 64 inbound slots
// and a legitimate peer was refused for ~75 s. One address holds at most
// max_conns_per_ip; with the slots full anyway (many addresses), a
// protected peer still gets in at once.
func TestConnectionExhaustion(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		var logs logLines
		cfg := loopbackConfig("tcp", nil)
		cfg.DisableDHT = true
		cfg.MaxConns, cfg.MaxConnsPerIP = 16, 4
		cfg.Logger, cfg.LogRepeatInterval = slog.New(&logs), time.Hour
		c := startNode(t, cfg)
		in := dialMany(t, c, 12)
		if in != cfg.MaxConnsPerIP {
			t.Errorf("%d of 12 identities from one address connected, want max_conns_per_ip %d", in, cfg.MaxConnsPerIP)
		}
		if got := refusedCount(c, ruleConnsPerIP); got != float64(12-cfg.MaxConnsPerIP) {
			t.Errorf("conns_per_ip refusals = %v, want %d", got, 12-cfg.MaxConnsPerIP)
		}
		if got := logs.lines("inbound overlay connection refused"); got != 1 {
			t.Errorf("refusal logged %d times, want once", got)
		}
	})
	t.Run("protected peer with slots full", func(t *testing.T) {
		protected := hostileHost(t) // a storer: an ordinary host whose ID is configured
		cfg := loopbackConfig("tcp", nil)
		cfg.DisableDHT = true
		cfg.MaxConns, cfg.MaxConnsPerIP = 8, 64 // the identities come from many addresses
		cfg.ProtectedPeers = []string{protected.ID().String()}
		c := startNode(t, cfg)
		if in := dialMany(t, c, cfg.MaxConns+4); in != cfg.MaxConns {
			t.Fatalf("%d identities connected, want the %d inbound slots", in, cfg.MaxConns)
		}
		if got := refusedCount(c, ruleConnsFull); got != 4 {
			t.Errorf("conns_full refusals = %v, want 4", got)
		}
		start := time.Now()
		if err := protected.Connect(t.Context(), addrInfo(c)); err != nil {
			t.Fatalf("protected peer refused with the slots full: %v", err)
		}
		took := time.Since(start)
		t.Logf("protected peer connected in %s with every inbound slot taken", took.Round(time.Microsecond))
		if took > 5*time.Second {
			t.Errorf("protected peer took %s to get in, bound 5 s", took)
		}
		if !c.host.ConnManager().IsProtected(protected.ID(), protectTag) {
			t.Error("protected peer not protected from trimming")
		}
	})
}

// dialMany connects n fresh identities to c and returns how many got a
// connection that stayed open.
func dialMany(t *testing.T, c *Node, n int) int {
	t.Helper()
	hosts := make([]host.Host, n)
	for i := range hosts {
		hosts[i] = hostileHost(t)
		_ = hosts[i].Connect(t.Context(), addrInfo(c)) // refusals are expected
	}
	time.Sleep(200 * time.Millisecond) // a refused handshake closes asynchronously
	in := 0
	for _, h := range hosts {
		if h.Network().Connectedness(c.host.ID()) == network.Connected {
			in++
		}
	}
	return in
}

// TestResendSlotsShared: hostile identities open resend answers and read
// them at 16 KiB/s (one such peer held all 8 global slots). Each holds at
// most its per-peer share; once they hold every general slot, a
// legitimate general request gets TOO_BUSY while a gap fill of a
// partition the node publishes on is still served from the reserve.
func TestResendSlotsShared(t *testing.T) {
	s := newResendSet(t)
	own := s.msgs[len(s.msgs)-1] // s.other: the partition the storer publishes on
	history := append(bigMessages(t, s, 8, 600<<10), encode(t, own))
	var logs logLines
	cfg := loopbackConfig("tcp", nil)
	cfg.DisableDHT, cfg.Policy, cfg.MaxClockSkew = true, s.policy, 0
	cfg.Logger, cfg.LogRepeatInterval = slog.New(&logs), time.Hour
	cfg.Resend.MaxStreams, cfg.Resend.MaxStreamsPerPeer, cfg.Resend.ReservedStreams = 8, 2, 2
	storer := startNode(t, cfg)
	storer.ServeResend(newMemHistory(t, history...))
	po := join(t, storer, s.other, nil)
	if _, err := po.PublishBatch(t.Context(), [][]byte{encode(t, own)}); err == nil {
		t.Fatal("publish without peers succeeded")
	}

	// Three identities, four requests each: two admitted per identity,
	// holding all six general slots.
	for range 3 {
		h := hostileHost(t)
		if err := h.Connect(t.Context(), addrInfo(storer)); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			slowResendReader(t, h, storer, streamr.ResendQuery{Part: s.part, From: streamr.MessageRef{}})
		}
	}
	waitFor(t, 10*time.Second, "the per-peer refusals", func() bool { return refusedCount(storer, ruleResendPerPeer) == 6 })

	client := resendNode(t, s, storer.Addrs(), nil)
	if _, err := client.ResendFrom(t.Context(), storer.ID(), streamr.ResendQuery{Part: s.part, Last: 1}); err == nil {
		t.Error("general request served with every general slot held")
	}
	if got := refusedCount(storer, ruleResendBusy); got != 1 {
		t.Errorf("resend_busy refusals = %v, want 1", got)
	}
	start := time.Now()
	ref := own.ID.Ref()
	res, err := client.ResendFrom(t.Context(), storer.ID(), streamr.ResendQuery{
		Part: s.other, Publisher: own.ID.PublisherID, ChainID: own.ID.MsgChainID, From: ref, To: ref,
	})
	took := time.Since(start)
	if err != nil || len(res.Messages) != 1 {
		t.Fatalf("gap fill of the own partition = %d messages, %v; want 1 from the reserve", len(res.Messages), err)
	}
	t.Logf("gap fill served in %s while hostile readers held every general slot", took.Round(time.Microsecond))
	if got := logs.lines("resend request refused: too busy"); got != 2 {
		t.Errorf("7 refusals logged %d times, want once per rule (2)", got)
	}
	if took > 2*time.Second {
		t.Errorf("gap fill took %s, bound 2 s", took)
	}
}

// slowResendReader sends q from h to n and reads the answer at 16 KiB/s
// until the test ends.
func slowResendReader(t *testing.T, h host.Host, n *Node, q streamr.ResendQuery) {
	t.Helper()
	req, err := marshalRequest(q)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.NewStream(t.Context(), n.host.ID(), ResendProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(lengthPrefixed(req)); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		st.Reset()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if _, err := st.Read(buf); err != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}
