package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/overlay"
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
