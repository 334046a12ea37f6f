package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// (4) A message dropped on purpose on its way to a subscriber is filled by
// gap fill within the configured timeout: gateway A publishes and answers
// resend requests; the subscriber is a real overlay
// node with the bridge's Orderer, which never sees reading 5 over gossip.
func TestFaultDroppedMessageGapFilled(t *testing.T) {
	const gapFillTimeout = 500 * time.Millisecond
	a := newTestGateway(t, "")
	a.run(t)
	part := streamr.StreamPartID{Stream: streamr.StreamID(a.Identity().Publisher + "/gap/data")}
	bootstrap := a.Identity().Addrs[0]

	node, err := overlay.New(overlay.Config{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, BootstrapPeers: []string{bootstrap},
		DisableDHT: true, DisableMDNS: true, DisableRelay: true, DisableHolePunching: true, DisableAutoNAT: true,
		RedialInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	adapter := newOverlayAdapter(node)
	order := bridge.NewOrderer(bridge.OrderConfig{
		Name: "test", Positions: store, Resender: node,
		GapFillTimeout: gapFillTimeout, RetryInterval: time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = node.Run(ctx) })
	wg.Go(func() { _ = order.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	var (
		mu        sync.Mutex
		got       []int
		dropped   bool
		gapOpened time.Time
		filledIn  time.Duration
	)
	record := func(m *streamr.StreamMessage, _ []byte) {
		var body struct{ N int }
		_ = json.Unmarshal(m.Content().Content, &body)
		got = append(got, body.N)
		if body.N == 5 {
			filledIn = time.Since(gapOpened)
		}
	}
	_, err = adapter.Join(part, func(m *streamr.StreamMessage, enc []byte) {
		var body struct{ N int }
		_ = json.Unmarshal(m.Content().Content, &body)
		mu.Lock()
		if body.N == 5 && !dropped {
			dropped = true
			mu.Unlock()
			return // lost in the overlay
		}
		if body.N == 6 && gapOpened.IsZero() {
			gapOpened = time.Now()
		}
		mu.Unlock()
		if err := order.Add(m, enc, func(m *streamr.StreamMessage, enc []byte) {
			mu.Lock()
			defer mu.Unlock()
			record(m, enc)
		}); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	waitPeers(t, node, 1)
	pub := connect(t, a.mqttAddr(t), "sensor")
	const n = 10
	for i := range n {
		if tok := pub.Publish("gap/data", 1, false, fmt.Sprintf(`{"n":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		done := len(got) >= n
		snapshot := append([]int(nil), got...)
		fill := filledIn
		mu.Unlock()
		if done {
			for i, v := range snapshot {
				if v != i {
					t.Fatalf("delivered %v: not in order", snapshot)
				}
			}
			if !dropped {
				t.Fatal("reading 5 was never dropped: the test proved nothing")
			}
			// The fill is asked for after gapFillTimeout; allow one
			// request round trip on top.
			if fill > gapFillTimeout+time.Second {
				t.Errorf("gap filled after %s, configured timeout %s", fill, gapFillTimeout)
			}
			t.Logf("gap filled %s after it opened (timeout %s)", fill.Round(time.Millisecond), gapFillTimeout)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v of %d readings\nA:\n%s", snapshot, n, a.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPeers waits until the node is connected to at least n peers.
func waitPeers(t *testing.T, node *overlay.Node, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for node.ConnectedPeers() < n {
		if time.Now().After(deadline) {
			t.Fatalf("overlay connected to %d peers, want %d", node.ConnectedPeers(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
