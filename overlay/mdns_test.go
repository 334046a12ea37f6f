package overlay

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestMDNSNotifee checks what happens when mDNS finds a peer on the LAN,
// without multicast: the notifee connects, and the two nodes' overlays form.
// (Multicast itself is libp2p's and cannot run in a 127.0.0.1-only test.)
func TestMDNSNotifee(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	a := startNode(t, loopbackConfig("tcp", nil))
	b := startNode(t, loopbackConfig("tcp", nil)) // no bootstrap: only the LAN finding connects them
	pa := join(t, a, part, nil)
	join(t, b, part, nil)

	found := &mdnsNotifee{ctx: t.Context(), n: a}
	found.HandlePeerFound(peer.AddrInfo{ID: a.host.ID(), Addrs: a.host.Addrs()}) // itself: ignored
	if got := a.ConnectedPeers(); got != 0 {
		t.Fatalf("A connected to %d peers after finding itself", got)
	}
	found.HandlePeerFound(peer.AddrInfo{ID: b.host.ID(), Addrs: b.host.Addrs()})
	waitFor(t, 10*time.Second, "the LAN peers to mesh", func() bool { return pa.Neighbours() == 1 })
}
