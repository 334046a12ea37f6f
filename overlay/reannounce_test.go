package overlay

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// pausableProxy forwards one TCP connection to target; while paused it
// stops reading what the dialler sends, so the dialler's socket, its
// stream windows and then pubsub's queue to the peer behind fill up: a
// peer that cannot keep up, on a real connection.
type pausableProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	wg     sync.WaitGroup
	conns  []net.Conn
}

func newPausableProxy(t *testing.T, target string) *pausableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *pausableProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *pausableProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() { p.copy(out, in, true) })
		p.wg.Go(func() { p.copy(in, out, false) })
	}
}

// copy forwards src to dst; gated reads wait while the proxy is paused.
func (p *pausableProxy) copy(dst, src net.Conn, gated bool) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		if gated {
			p.mu.Lock()
			for p.paused {
				p.cond.Wait()
			}
			p.mu.Unlock()
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *pausableProxy) setPaused(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *pausableProxy) close() {
	p.ln.Close()
	p.setPaused(false)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// startNodeWith starts a node and its Run loop, stopped at test cleanup,
// with pubsub's queue to each peer of the given size (0: the default).
func startNodeWith(t *testing.T, cfg Config, outboundQueue int) *Node {
	t.Helper()
	n, err := start(cfg, nodeOptions{scorePeriod: 100 * time.Millisecond, heartbeat: 200 * time.Millisecond, outboundQueue: outboundQueue})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// bigMessage is the seq-th message of pub's chain with pad bytes of
// content: few of them fill a socket.
func bigMessage(t *testing.T, pub *publisher, part streamr.StreamPartID, seq int32, pad int) []byte {
	t.Helper()
	content, err := json.Marshal(map[string]any{"seq": seq, "pad": strings.Repeat("x", pad)})
	if err != nil {
		t.Fatal(err)
	}
	m := &streamr.StreamMessage{
		ID: streamr.MessageID{
			StreamID: part.Stream, StreamPartition: int32(part.Partition),
			Timestamp: time.Now().UnixMilli(), SequenceNumber: seq, MsgChainID: pub.chain,
		},
		Body: &streamr.ContentMessage{Content: content, ContentType: streamr.ContentJSON},
	}
	if err := streamr.SignMessage(context.Background(), pub.key, m); err != nil {
		t.Fatal(err)
	}
	return encode(t, m)
}

func hasSeq(c *collector, seq int32) bool {
	for _, d := range c.deliveries() {
		if d.Msg.ID.SequenceNumber == seq {
			return true
		}
	}
	return false
}

// pairThroughProxy starts B and A, A connected to B only through a
// pausable proxy, with pubsub's queue from A to B of queue RPCs, and
// joins both to part; it returns when A has B in its mesh.
func pairThroughProxy(t *testing.T, part streamr.StreamPartID, queue int, atB *collector) (*Partition, *Partition, *pausableProxy) {
	t.Helper()
	cfgB := loopbackConfig("tcp", nil)
	cfgB.DisableDHT, cfgB.SeenTTL = true, MinSeenTTL
	b := startNode(t, cfgB)
	var target string
	for _, a := range b.host.Network().ListenAddresses() {
		if port, err := a.ValueForProtocol(6); err == nil { // P_TCP
			target = "127.0.0.1:" + port
		}
	}
	proxy := newPausableProxy(t, target)
	cfgA := loopbackConfig("tcp", []string{"/ip4/127.0.0.1/tcp/" + strconv.Itoa(proxy.port()) + "/p2p/" + b.ID()})
	cfgA.DisableDHT, cfgA.SeenTTL = true, MinSeenTTL
	a := startNodeWith(t, cfgA, queue)
	pb := join(t, b, part, atB.deliver)
	pa := join(t, a, part, nil)
	waitFor(t, 20*time.Second, "A to mesh with B", func() bool { return pa.Neighbours() == 1 })
	return pa, pb, proxy
}

// TestReannounceTipDroppedAtSendQueue: A publishes a chain to B while B
// cannot read (the proxy between them is paused), until pubsub's queue to
// B is full and drops; the chain's last message is dropped with it, and
// A then goes quiet. No later message tells B of the loss: only A saw it.
// Once A's losses are over for longer than the seen TTL, A publishes the
// chain's tip again and B receives it. On main's code B never does.
func TestReannounceTipDroppedAtSendQueue(t *testing.T) {
	t.Parallel() // mostly waiting for pubsub's seen-cache sweep (up to a minute)
	pub := newPublisher(t)
	part := pub.part(t, 0)
	var atB collector
	pa, _, proxy := pairThroughProxy(t, part, 8, &atB)
	drops := func() float64 { return testutil.ToFloat64(pa.m.drops.WithLabelValues(reasonSendQueue)) }
	const pad = 64 << 10

	if err := pa.Publish(t.Context(), bigMessage(t, pub, part, 0, pad)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B to receive the first message", func() bool { return hasSeq(&atB, 0) })

	proxy.setPaused(true)
	seq := int32(1)
	for ; drops() == 0; seq++ {
		if seq > 2000 {
			t.Fatalf("no send loss after %d messages of %d KiB to a peer that does not read", seq, pad>>10)
		}
		if err := pa.Publish(t.Context(), bigMessage(t, pub, part, seq, pad)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let pubsub's event loop take it: the drop is traced there
	}
	tail, before := seq, drops()
	if err := pa.Publish(t.Context(), bigMessage(t, pub, part, tail, pad)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the tail to be dropped at the full queue to B", func() bool { return drops() > before })
	proxy.setPaused(false)
	t.Logf("published %d messages while B did not read; %v dropped at A's send queue", tail+1, drops())

	time.Sleep(time.Second) // what was queued reaches B; the tail was not queued
	if hasSeq(&atB, tail) {
		t.Fatalf("B received the tail %d before any re-announce: it was not lost", tail)
	}
	// The seen TTL (5 s) and a margin, then pubsub refuses to publish an ID
	// it still holds as delivered until its next sweep of the seen cache
	// (once a minute from A's start).
	waitFor(t, 90*time.Second, "B to receive the re-announced tail", func() bool { return hasSeq(&atB, tail) })
	if n := testutil.ToFloat64(pa.m.reannounced); n < 1 {
		t.Errorf("reannounced_total = %v, want at least 1", n)
	}
}

// TestNoReannounceWithoutLoss: a chain sent without loss is never
// published again, however long the publisher stays quiet.
func TestNoReannounceWithoutLoss(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	var atB collector
	pa, _, _ := pairThroughProxy(t, part, 0, &atB)
	for seq := range int32(3) {
		if err := pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), seq)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "B to receive the chain", func() bool { return len(atB.deliveries()) == 3 })
	// Past the seen TTL, its margin and a tick of the loop.
	time.Sleep(MinSeenTTL + reannounceMargin + 2*gaugeInterval)
	if n := testutil.ToFloat64(pa.m.reannounced); n != 0 {
		t.Errorf("reannounced_total = %v without a send loss, want 0", n)
	}
	if d := testutil.ToFloat64(pa.m.drops.WithLabelValues(reasonSendQueue)); d != 0 {
		t.Errorf("%v messages dropped at the send queue: the test should have none", d)
	}
	if got := len(atB.deliveries()); got != 3 {
		t.Errorf("B got %d deliveries, want the 3 messages once each", got)
	}
}

// TestTipStore keeps each chain's newest message, by chain position
// (parallel validation may store an older one later), and forgets the
// least recently updated chain beyond its bound.
func TestTipStore(t *testing.T) {
	pubA, pubB := newPublisher(t), newPublisher(t)
	part := pubA.part(t, 0)
	msg := func(p *publisher, chain string, ts int64, seq int32) (*streamr.StreamMessage, []byte) {
		m := message(t, p.key, part, chain, ts, seq)
		return m, encode(t, m)
	}
	s := newTipStore(2)
	for i, tc := range []struct {
		p     *publisher
		chain string
		ts    int64
		seq   int32
	}{
		{pubA, "c1", 100, 1},
		{pubA, "c1", 100, 0}, // older, validated later: ignored
		{pubA, "c1", 200, 0}, // newer
		{pubB, "c1", 50, 0},  // another publisher's chain of the same ID
		{pubA, "c2", 10, 0},  // a third chain: pubA's c1, updated least recently, goes
	} {
		m, data := msg(tc.p, tc.chain, tc.ts, tc.seq)
		s.note(m, data, int64(i+1))
	}
	got := s.since(0, 100)
	if len(got) != 2 {
		t.Fatalf("%d tips kept, want the bound, 2", len(got))
	}
	want := map[int64]bool{4: true, 5: true} // pubB's c1 and pubA's c2; pubA's c1 (updated at 3) was evicted
	for _, tip := range got {
		if !want[tip.at] {
			t.Errorf("kept the tip stored at %d (ts %d seq %d), want those stored at 4 and 5", tip.at, tip.ts, tip.seq)
		}
	}
	if got := s.since(5, 5); len(got) != 1 || got[0].ts != 10 {
		t.Errorf("since(5, 5) = %v, want pubA's c2", got)
	}

	s = newTipStore(4)
	m1, d1 := msg(pubA, "c1", 100, 1)
	s.note(m1, d1, 1)
	if got := s.since(0, 10); len(got) != 1 || got[0].seq != 1 {
		t.Fatalf("since = %v, want the message of seq 1", got)
	}
	m0, d0 := msg(pubA, "c1", 100, 0)
	s.note(m0, d0, 2)
	if got := s.since(0, 10); len(got) != 1 || got[0].seq != 1 || got[0].at != 1 {
		t.Errorf("an older message replaced the tip: %+v", got[0])
	}
	// Updating a chain already held is on the validator's path: no
	// allocation per message.
	if allocs := testing.AllocsPerRun(100, func() { s.note(m1, d1, 3) }); allocs != 0 {
		t.Errorf("note of a known chain allocates %v times, want 0", allocs)
	}
}

// TestSendLosses: an episode of drops closes once its last drop is old
// enough, and a new one starts after it.
func TestSendLosses(t *testing.T) {
	var l sendLosses
	if _, _, ok := l.endedBefore(100); ok {
		t.Fatal("an episode without drops ended")
	}
	l.note(10)
	l.note(20)
	if _, _, ok := l.endedBefore(20); ok {
		t.Error("the episode ended while its last drop is not before the quiet mark")
	}
	first, last, ok := l.endedBefore(21)
	if !ok || first != 10 || last != 20 {
		t.Errorf("endedBefore = %d, %d, %v; want 10, 20, true", first, last, ok)
	}
	if _, _, ok := l.endedBefore(1000); ok {
		t.Error("a closed episode ended twice")
	}
	l.note(30)
	if first, _, _ := l.endedBefore(1000); first != 30 {
		t.Errorf("a new episode starts at %d, want 30", first)
	}
}
