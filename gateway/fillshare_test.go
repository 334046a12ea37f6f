package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// shareChains are the chains of the publisher in TestGapFetchedOnceForAllOrderers.
const shareChains, sharePerChain = 3, 10

// sharedGapMessages returns the publisher's messages of three interleaved
// chains on part, in publishing order (each chain's n-th at ts base+3n+j).
func sharedGapMessages(t *testing.T, key *streamr.EVMKey, part streamr.StreamPartID) []streamr.Envelope {
	t.Helper()
	base := time.Now().UnixMilli()
	var out []streamr.Envelope
	prev := make([]*streamr.MessageRef, shareChains)
	for n := range sharePerChain {
		for j := range shareChains {
			content, _ := json.Marshal(map[string]int{"chain": j, "n": n})
			m := &streamr.StreamMessage{
				ID: streamr.MessageID{StreamID: part.Stream, StreamPartition: int32(part.Partition),
					Timestamp: base + int64(3*n+j), MsgChainID: fmt.Sprintf("chain-%d", j)},
				PrevMsgRef: prev[j],
				Body:       &streamr.ContentMessage{Content: content, ContentType: streamr.ContentJSON},
			}
			if err := streamr.SignMessage(context.Background(), key, m); err != nil {
				t.Fatal(err)
			}
			enc, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			ref := m.ID.Ref()
			prev[j] = &ref
			out = append(out, streamr.Envelope{Msg: m, Encoded: enc})
		}
	}
	return out
}

// A message lost on its way to a gateway is fetched from the network once,
// whatever number of orderers need it, and by a range of its own chain.
// Gateway B (real, as `bridge run` builds it) subscribes to a stream, so
// two orderers order the partition: MQTT delivery and storing (it keeps
// what it receives). Its only peer P, a real overlay node, publishes three
// interleaved chains of one publisher but never gossips the fifth message
// of chains 0 and 1; it answers resend requests from a real store holding
// every message. B delivers all 30 on MQTT in chain order and stores them,
// while P sends exactly the 2 missing messages in resend answers: on
// main's code each orderer fetched them on its own, by a range spanning
// every chain of the publisher (8 messages for these 2).
func TestGapFetchedOnceForAllOrderers(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	addr := key.Address()
	part := streamr.StreamPartID{Stream: streamr.StreamID(streamr.UserID(addr[:]) + "/share")}
	lost := map[int]bool{5*shareChains + 0: true, 5*shareChains + 1: true} // the fifth of chains 0 and 1

	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	p, err := overlay.New(overlay.Config{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DisableDHT: true, DisableMDNS: true,
		DisableRelay: true, DisableHolePunching: true, DisableAutoNAT: true, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.ServeResend(store)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	pp, err := p.Join(part, nil)
	if err != nil {
		t.Fatal(err)
	}

	b := newTestGateway(t, fmt.Sprintf(`[overlay]
listen = ["/ip4/127.0.0.1/tcp/0"]
bootstrap = [%q]
mdns = false
nat = false
retry = "200ms"
gap_fill_timeout = "2s"
[[subscribe]]
stream = %q
`, p.Addrs()[0], part.Stream))
	b.run(t)
	var mu sync.Mutex
	got := make(map[int][]int) // chain → n, in MQTT delivery order
	received := 0
	sub := connect(t, b.mqttAddr(t), "consumer")
	if tok := sub.Subscribe(string(part.Stream), 1, func(_ mqtt.Client, m mqtt.Message) {
		var body struct{ Chain, N int }
		_ = json.Unmarshal(m.Payload(), &body)
		mu.Lock()
		defer mu.Unlock()
		got[body.Chain] = append(got[body.Chain], body.N)
		received++
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	deadline := time.Now().Add(20 * time.Second)
	for pp.Neighbours() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("P never meshed with B\n%s", b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Made now, so that a gap is a reordering to wait out for
	// gap_fill_timeout (well above any reordering by B's parallel
	// validation) rather than an old loss asked for at once: only the two
	// lost messages are fetched.
	msgs := sharedGapMessages(t, key, part)
	if _, err := store.StoreReceived(t.Context(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	var gossip [][]byte
	for i, e := range msgs {
		if !lost[i] {
			gossip = append(gossip, e.Encoded)
		}
	}
	if len(gossip) != len(msgs)-2 {
		t.Fatalf("%d of %d messages left out of gossip, want 2", len(msgs)-len(gossip), len(msgs))
	}
	if sent, err := pp.PublishBatch(t.Context(), gossip); err != nil || sent != len(gossip) {
		t.Fatalf("publish: sent %d of %d: %v", sent, len(gossip), err)
	}
	b.waitCounter(t, "tributary_order_delivered_total", "orderer", streamr.StoredPositions, float64(len(msgs)), 20*time.Second)
	deadline = time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := received
		mu.Unlock()
		if n >= len(msgs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B delivered %d of %d readings on MQTT\n%s", n, len(msgs), b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}

	mu.Lock()
	for j := range shareChains {
		if len(got[j]) != sharePerChain {
			t.Errorf("chain %d: delivered %v, want 0..%d once each", j, got[j], sharePerChain-1)
			continue
		}
		for i, n := range got[j] {
			if n != i {
				t.Errorf("chain %d: delivered %v, not in chain order", j, got[j])
				break
			}
		}
	}
	mu.Unlock()
	if n := gathered(t, reg, "tributary_overlay_resend_messages_total"); n != 2 {
		t.Errorf("P sent %v messages in resend answers, want the 2 missing ones once", n)
	}
	if n := gathered(t, b.system().reg, "tributary_order_fill_shared_total"); n != 2 {
		t.Errorf("B's orderers shared %v fetched messages, want 2 (each fetched by one, taken by the other)", n)
	}
}

// gathered sums the series of counter name in g.
func gathered(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
