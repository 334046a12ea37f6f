package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/bridge"
)

// TestOverlayLimitsConfig: [overlay]'s limits against hostile peers reach
// overlay.Config, [receipts] peers are protected, and bad values are
// refused naming the key.
func TestOverlayLimitsConfig(t *testing.T) {
	const storer = "12D3KooWGRUVh4zEbBzCHdQELoLo6kD6jjtvXUkgRpfoLTBjfeRQ"
	path := writeConfig(t, `
[overlay]
max_conns_per_ip = 3
max_conns_per_subnet = 7
protected_peers = ["/ip4/192.0.2.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"]
max_peer_topics = 99
resend_max_streams = 10
resend_max_streams_per_peer = 3
resend_reserved_streams = 2
resend_buffer_bytes = 65536
resend_verify_workers = 3
[receipts]
peers = ["`+storer+`"]
`)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.overlayConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.MaxConnsPerIP != 3 || o.MaxConnsPerSubnet != 7 || o.MaxPeerTopics != 99 {
		t.Errorf("connection and topic limits %d, %d, %d", o.MaxConnsPerIP, o.MaxConnsPerSubnet, o.MaxPeerTopics)
	}
	if r := o.Resend; r.MaxStreams != 10 || r.MaxStreamsPerPeer != 3 || r.ReservedStreams != 2 || r.BufferBytes != 65536 || r.VerifyWorkers != 3 {
		t.Errorf("resend limits %+v", r)
	}
	if len(o.ProtectedPeers) != 2 || !slices.Contains(o.ProtectedPeers, storer) {
		t.Errorf("protected peers %q: want the configured one and the [receipts] storer", o.ProtectedPeers)
	}
	if err := o.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}

	for _, tc := range []struct{ content, want string }{
		{"[overlay]\nprotected_peers = [\"not-a-peer\"]\n", "protected peer"},
		{"[overlay]\nresend_reserved_streams = 16\n", "overlay.resend_reserved_streams"},
		{"[overlay]\nmax_peer_topics = 0\n", "overlay.max_peer_topics"},
		{"[overlay]\nresend_verify_workers = -1\n", "overlay.resend_verify_workers"},
		{"[overlay]\nresend_buffer_bytes = -1\n", "overlay.resend_buffer_bytes"},
	} {
		_, err := LoadConfig(writeConfig(t, tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want it to name %q", tc.content, err, tc.want)
		}
	}
}

// TestForwardPartitionLimitsConfig: the forwarder's partition limits reach
// bridge.ForwardConfig, with the defaults when unset, and bad values are
// refused naming the key.
func TestForwardPartitionLimitsConfig(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "[overlay]\nmax_forward_partitions = 7\npartition_idle_timeout = \"90s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.forwardConfig(nil, nil); f.MaxPartitions != 7 || f.IdleTimeout != 90*time.Second {
		t.Errorf("forward config %+v: want 7 partitions, 90 s", f)
	}
	def := defaultConfig()
	if f := def.forwardConfig(nil, nil); f.MaxPartitions != bridge.DefaultMaxForwardPartitions || f.IdleTimeout != bridge.DefaultPartitionIdleTimeout {
		t.Errorf("default forward config %+v", f)
	}
	for _, content := range []string{"[overlay]\nmax_forward_partitions = 0\n", "[overlay]\npartition_idle_timeout = \"0s\"\n"} {
		_, err := LoadConfig(writeConfig(t, content))
		if err == nil || !strings.Contains(err.Error(), "overlay.max_forward_partitions and overlay.partition_idle_timeout") {
			t.Errorf("%q: err %v, want it to name the keys", content, err)
		}
	}
}
