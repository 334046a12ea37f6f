package overlay

import (
	"slices"
	"testing"
	"time"
)

// TestDiscoveryViaDHT: B and C know only a bootstrap node that carries no
// stream partition, so they can meet only by finding each other's
// announcement of the partition in the DHT. Without the DHT they do not.
func TestDiscoveryViaDHT(t *testing.T) {
	tests := []struct {
		name     string
		dht      bool
		wantMesh bool
	}{
		{"dht", true, true},
		{"no dht", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub := newPublisher(t)
			part := pub.part(t, 0)
			cfg := func(bootstrap []string) Config {
				c := loopbackConfig("tcp", bootstrap)
				c.DisableDHT = !tc.dht
				return c
			}
			boot := startNode(t, cfg(nil))
			b := startNode(t, cfg(boot.Addrs()))
			c := startNode(t, cfg(boot.Addrs()))
			pb := join(t, b, part, nil)
			join(t, c, part, nil)

			if tc.wantMesh {
				waitFor(t, 20*time.Second, "B and C to find each other", func() bool { return pb.Neighbours() == 1 })
				// The first lookup runs providerSettle after the join and may come
				// before C's record is out (a loaded machine); the next is due
				// providerInterval later.
				waitFor(t, providerInterval+providerTimeout+5*time.Second, "B's status to list C as a DHT provider of the partition", func() bool {
					for _, st := range b.PartitionStates() {
						if st.Part == part && slices.Contains(st.Providers, c.ID()) {
							return true
						}
					}
					return false
				})
				return
			}
			time.Sleep(3 * time.Second) // three discovery rounds
			if n := pb.Peers(); n != 0 {
				t.Fatalf("B found %d partition peers without the DHT", n)
			}
		})
	}
}
