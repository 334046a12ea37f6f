package overlay

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

func TestNodeLifecycle(t *testing.T) {
	pub := newPublisher(t)
	cfg := loopbackConfig("tcp", nil)
	cfg.IdentityFile = filepath.Join(t.TempDir(), "overlay.key")

	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := first.ID()
	if len(first.Addrs()) == 0 {
		t.Error("no listen addresses")
	}
	p, err := first.Join(pub.part(t, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := first.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if err := p.Leave(); err != nil {
		t.Errorf("Leave after Close: %v", err)
	}
	if _, err := first.Join(pub.part(t, 1), nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Join after Close: %v, want net.ErrClosed", err)
	}

	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.ID() != id {
		t.Errorf("peer ID after restart %s, want %s from the identity file", second.ID(), id)
	}
}

func TestLeaveAndRejoin(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	a := startNode(t, loopbackConfig("tcp", nil))
	b := startNode(t, loopbackConfig("tcp", a.Addrs()))
	pa := join(t, a, part, nil)
	var got collector
	pb := join(t, b, part, got.deliver)
	waitFor(t, 10*time.Second, "mesh", func() bool { return pa.Neighbours() == 1 })

	if err := pb.Leave(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A to notice B left", func() bool { return pa.Neighbours() == 0 && pa.Peers() == 0 })
	if err := pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), 0)); !errors.Is(err, streamr.ErrNoPeers) {
		t.Fatalf("Publish after the only peer left: %v, want streamr.ErrNoPeers", err)
	}
	join(t, b, part, got.deliver)
	// GossipSub keeps a left peer out of the mesh for its 10 s unsubscribe
	// backoff, against graft flapping, and forgets an expired backoff only
	// every 15th heartbeat, 2 heartbeats after it expired: up to 10 + 2 +
	// 15 s (about 15 s when the ticks line up, as on an idle machine).
	waitFor(t, 35*time.Second, "mesh again", func() bool { return pa.Neighbours() == 1 })
	if err := pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery after rejoin", func() bool { return len(got.deliveries()) == 1 })
}

func TestConfig(t *testing.T) {
	if got, want := ListenAddrsFor("::", 4001), []string{"/ip6/::/tcp/4001", "/ip6/::/udp/4001/quic-v1"}; !slices.Equal(got, want) {
		t.Errorf("ListenAddrsFor(::) = %v, want %v", got, want)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"too few connections", Config{MaxConns: 3}},
		{"negative skew", Config{MaxClockSkew: -time.Second}},
		{"negative size", Config{Limits: streamrLimits(-1)}},
		{"bootstrap without peer ID", Config{BootstrapPeers: []string{"/ip4/127.0.0.1/tcp/4001"}}},
		{"bad bootstrap multiaddr", Config{BootstrapPeers: []string{"not a multiaddr"}}},
		{"bad listen address", Config{ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/nonsense"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DisableMDNS, tc.cfg.DisableRelay, tc.cfg.DisableAutoNAT = true, true, true
			if len(tc.cfg.ListenAddrs) == 0 {
				tc.cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
			}
			n, err := New(tc.cfg)
			if err == nil {
				n.Close()
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

func streamrLimits(maxMessage int) streamr.Limits { return streamr.Limits{MaxMessageBytes: maxMessage} }
