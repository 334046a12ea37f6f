package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// startTestNode runs an overlay node on 127.0.0.1 until the test ends.
func startTestNode(t *testing.T, bootstrap []string) *overlay.Node {
	t.Helper()
	node, err := overlay.New(overlay.Config{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, BootstrapPeers: bootstrap,
		DisableDHT: true, DisableMDNS: true, DisableRelay: true, DisableHolePunching: true, DisableAutoNAT: true,
		RedialInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = node.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = node.Close()
	})
	return node
}

func waitMember(t *testing.T, node *overlay.Node, part streamr.StreamPartID, member string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for slices.Contains(node.PartitionPeers(part), member) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s member of %s: %v, want %v", member, part, !want, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The forwarder leaves a partition it no longer sends on (issue 13), but a
// [[subscribe]] or [[store]] rule joined the same partition through the
// adapter: the subscription's membership must survive, and the overlay is
// left only with the last handle.
func TestAdapterLeaveKeepsOtherHandles(t *testing.T) {
	a := startTestNode(t, nil)
	b := startTestNode(t, a.Addrs())
	waitPeers(t, b, 1)
	part := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/shared"}
	if _, err := b.Join(part, nil); err != nil {
		t.Fatal(err)
	}
	adapter := newOverlayAdapter(a)
	sub, err := adapter.Join(part, func(*streamr.StreamMessage, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := adapter.Join(part, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitMember(t, b, part, a.ID(), true)

	for range 2 { // idempotent: a second Leave must not count against the subscription
		if err := fwd.Leave(); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Contains(a.PartitionPeers(part), b.ID()) {
		t.Fatal("the forwarder's Leave left the overlay under a subscription")
	}
	fwd, err = adapter.Join(part, nil) // the forwarder rejoins on demand
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Leave(); err != nil {
		t.Fatal(err)
	}
	if a.PartitionPeers(part) == nil {
		t.Fatal("the subscription's Leave left the overlay under the forwarder")
	}
	if err := fwd.Leave(); err != nil {
		t.Fatal(err)
	}
	if a.PartitionPeers(part) != nil {
		t.Fatal("still joined after the last handle left")
	}
	waitMember(t, b, part, a.ID(), false)
	if _, err := adapter.Join(part, nil); err != nil {
		t.Fatalf("join after the last handle left: %v", err)
	}
}

// The attack of issue 13 against a real overlay node: 3,000 topics made
// 3,000 partitions joined for good, 6,000 goroutines. With no peers every
// joined partition holds its messages back, so the forwarder stays at
// max_forward_partitions and the rest wait in storage; the goroutines
// grow with the limit, not with the topics.
func TestForwarderGoroutinesBoundedByPartitionLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("joins thousands of real overlay partitions")
	}
	const nParts = 3000
	measure := func(limit int) (joined float64, goroutines int) {
		node := startTestNode(t, nil)
		store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Go(func() { _ = store.Run(ctx) })
		storeOnePerPartition(t, store, nParts)
		before := runtime.NumGoroutine()
		reg := prometheus.NewRegistry()
		f := bridge.NewForwarder(store, newOverlayAdapter(node), bridge.ForwardConfig{
			Retry: 50 * time.Millisecond, MaxPartitions: limit, Registerer: reg, Logger: slog.New(slog.DiscardHandler),
		})
		wg.Go(func() { _ = f.Run(ctx) })
		deadline := time.Now().Add(2 * time.Minute)
		for joined = gauge(t, reg, "tributary_forward_partitions"); joined < float64(min(limit, nParts)); joined = gauge(t, reg, "tributary_forward_partitions") {
			if time.Now().After(deadline) {
				t.Fatalf("%v partitions joined, want %d", joined, min(limit, nParts))
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // four passes to join beyond the limit
		joined = gauge(t, reg, "tributary_forward_partitions")
		return joined, runtime.NumGoroutine() - before
	}
	capped, cappedG := measure(bridge.DefaultMaxForwardPartitions)
	all, allG := measure(nParts)
	t.Logf("%d partitions without peers: limit %d → %v joined, +%d goroutines; limit %d → %v joined, +%d goroutines",
		nParts, bridge.DefaultMaxForwardPartitions, capped, cappedG, nParts, all, allG)
	if capped != bridge.DefaultMaxForwardPartitions {
		t.Errorf("%v partitions joined, limit %d", capped, bridge.DefaultMaxForwardPartitions)
	}
	if cappedG > allG/4 {
		t.Errorf("+%d goroutines at the limit, +%d for all %d partitions: not bounded by the limit", cappedG, allG, nParts)
	}
}

func storeOnePerPartition(t *testing.T, store *storage.Store, n int) {
	t.Helper()
	readings := make([]*storage.Reading, n)
	waits := make([]func(context.Context) error, n)
	for i := range n {
		part := streamr.StreamPartID{Stream: streamr.StreamID(fmt.Sprintf("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/topic/%d", i))}
		readings[i] = &storage.Reading{Part: part, Source: "s", Payload: []byte("{}")}
		wait, err := store.Enqueue(readings[i], true)
		if err != nil {
			t.Fatal(err)
		}
		waits[i] = wait
	}
	var signed []storage.Signed
	for i, r := range readings {
		if err := waits[i](t.Context()); err != nil {
			t.Fatal(err)
		}
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: r.Part.Stream, Timestamp: 1, PublisherID: make([]byte, 20), MsgChainID: "c"},
			Body: &streamr.ContentMessage{Content: []byte("{}")},
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		signed = append(signed, storage.Signed{ReadingSeq: r.Seq, Envelope: streamr.Envelope{Msg: m, Encoded: enc}})
		if len(signed) == 256 || i == n-1 {
			if err := store.CommitSigned(t.Context(), signed, nil); err != nil {
				t.Fatal(err)
			}
			signed = signed[:0]
		}
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
