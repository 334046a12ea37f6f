package overlay

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// restartable is a node that can be stopped and started again with the
// same identity and address, like a gateway restarted by systemd.
type restartable struct {
	t      *testing.T
	cfg    Config
	n      *Node
	cancel context.CancelFunc
	done   chan error
}

func newRestartable(t *testing.T, bootstrap []string) *restartable {
	t.Helper()
	port := freeTCPPort(t)
	cfg := loopbackConfig("tcp", bootstrap)
	cfg.ListenAddrs = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
	cfg.IdentityFile = filepath.Join(t.TempDir(), "peer.key")
	cfg.DisableDHT = true
	r := &restartable{t: t, cfg: cfg}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// start runs the node with production timing (1 s heartbeat).
func (r *restartable) start() {
	r.t.Helper()
	n, err := start(r.cfg, nodeOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.n, r.cancel, r.done = n, cancel, make(chan error, 1)
	go func() { r.done <- n.Run(ctx) }()
}

// stop shuts the node down as SIGTERM does.
func (r *restartable) stop() {
	if r.n == nil {
		return
	}
	r.cancel()
	<-r.done
	if err := r.n.Close(); err != nil {
		r.t.Errorf("Close: %v", err)
	}
	r.n = nil
}

// TestRestartedPeerRejoinsMesh stops a subscriber (as on SIGTERM) and
// starts it again a second later with the same identity and address, and
// then does the same to the publisher: each time the partition's mesh
// forms again and messages flow within 5 s, and the gauges match
// ListPeers and the mesh.
func TestRestartedPeerRejoinsMesh(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	a := newRestartable(t, nil)
	b := newRestartable(t, a.n.Addrs())
	var got collector
	pa := join(t, a.n, part, nil)
	join(t, b.n, part, got.deliver)
	seq := int32(0)
	flows := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		want := len(got.deliveries()) + 1
		waitFor(t, 5*time.Second, what, func() bool {
			if pa.Neighbours() > 0 {
				_ = pa.Publish(t.Context(), pub.signed(t, part, time.Now().UnixMilli(), seq))
				seq++
			}
			return len(got.deliveries()) >= want
		})
		return time.Since(start)
	}
	flows("first delivery")

	b.stop()
	time.Sleep(time.Second)
	b.start()
	pb := join(t, b.n, part, got.deliver)
	t.Logf("subscriber restarted: delivering again after %s", flows("delivery after the subscriber restarted").Round(time.Millisecond))
	checkGauges(t, pa)
	checkGauges(t, pb)

	a.stop()
	time.Sleep(time.Second)
	a.start()
	pa = join(t, a.n, part, nil)
	t.Logf("publisher restarted: delivering again after %s", flows("delivery after the publisher restarted").Round(time.Millisecond))
	checkGauges(t, pa)
	checkGauges(t, pb)
}

// checkGauges compares a partition's gauges with pubsub's ListPeers and
// the mesh, after the next gauge refresh.
func checkGauges(t *testing.T, p *Partition) {
	t.Helper()
	time.Sleep(gaugeInterval + 100*time.Millisecond)
	listed := p.t.ListPeers()
	if got := testutil.ToFloat64(p.m.peers); int(got) != len(listed) {
		t.Errorf("peers gauge %v, ListPeers %d", got, len(listed))
	}
	mesh := p.mesh.list()
	if got := testutil.ToFloat64(p.m.mesh); int(got) != len(mesh) {
		t.Errorf("neighbours gauge %v, mesh %d", got, len(mesh))
	}
	for _, id := range mesh {
		if !slices.Contains(listed, id) {
			t.Errorf("mesh peer %s is not in ListPeers", id)
		}
	}
	if len(mesh) == 0 {
		t.Error("empty mesh while messages flow")
	}
	checkStates(t, p, listed, mesh)
}

// checkStates expects the status page's view of p (PartitionStates,
// ConnectedPeerInfo) to agree with ListPeers and the mesh.
func checkStates(t *testing.T, p *Partition, listed, mesh []peer.ID) {
	t.Helper()
	for _, st := range p.node.PartitionStates() {
		if st.Part != p.part {
			continue
		}
		if !slices.Equal(st.Peers, peerStrings(listed)) || !slices.Equal(st.Neighbours, peerStrings(mesh)) {
			t.Errorf("PartitionStates: peers %v, neighbours %v; ListPeers %v, mesh %v", st.Peers, st.Neighbours, listed, mesh)
		}
		connected := map[string]bool{}
		for _, pi := range p.node.ConnectedPeerInfo() {
			connected[pi.ID] = len(pi.Addrs) > 0
		}
		for _, id := range st.Peers {
			if !connected[id] {
				t.Errorf("partition peer %s is not in ConnectedPeerInfo with an address", id)
			}
		}
		return
	}
	t.Errorf("PartitionStates does not list %s", p.part)
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
