package overlay

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"

	"github.com/tributary-iot/tributary/streamr"
)

// PeerInfo is a connected peer, as the gateway's status page lists it.
type PeerInfo struct {
	ID        string
	Addrs     []string // remote addresses of its open connections
	Protected bool     // a bootstrap or configured protected peer: never trimmed
	Score     float64  // GossipSub score at the last snapshot (negative: penalised)
}

// ConnectedPeerInfo lists the peers with an open connection, by ID.
func (n *Node) ConnectedPeerInfo() []PeerInfo {
	var scores map[peer.ID]float64
	if s := n.scores.Load(); s != nil {
		scores = *s
	}
	ids := n.host.Network().Peers()
	out := make([]PeerInfo, 0, len(ids))
	for _, id := range ids {
		info := PeerInfo{ID: id.String(), Protected: n.host.ConnManager().IsProtected(id, protectTag), Score: scores[id]}
		for _, c := range n.host.Network().ConnsToPeer(id) {
			info.Addrs = append(info.Addrs, c.RemoteMultiaddr().String())
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// PartitionState is this node's view of one joined stream partition, from
// the same sources as the tributary_overlay_peers and _neighbours gauges.
type PartitionState struct {
	Part       streamr.StreamPartID
	Peers      []string // connected members (pubsub's ListPeers)
	Neighbours []string // mesh peers: those each message is forwarded to
	// Providers are the peers the DHT named as carrying the partition at
	// the last lookup (every providerInterval); nil without a DHT.
	Providers   []string
	ProvidersAt time.Time
}

// PartitionStates lists the joined stream partitions, by ID.
func (n *Node) PartitionStates() []PartitionState {
	var out []PartitionState
	n.joined.Range(func(_, v any) bool {
		p := v.(*Partition)
		st := PartitionState{Part: p.part, Peers: peerStrings(p.node.ps.ListPeers(p.topic)), Neighbours: peerStrings(p.mesh.list())}
		st.Providers, st.ProvidersAt = n.providers.get(p.topic)
		out = append(out, st)
		return true
	})
	slices.SortFunc(out, func(a, b PartitionState) int { return strings.Compare(a.Part.String(), b.Part.String()) })
	return out
}

func peerStrings(ids []peer.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	slices.Sort(out)
	return out
}

// Provider lookups for the status page: bounded, and rare enough to cost
// the DHT nothing noticeable.
const (
	providerInterval = 30 * time.Second
	providerTimeout  = 10 * time.Second
	providerLimit    = 32
	providerSettle   = 2 * time.Second
	providerBatch    = 8 // lookups per providerInterval: 256 partitions are each refreshed every 16 min
)

// providerCache holds the last DHT provider lookup per topic.
type providerCache struct {
	kick  chan struct{} // a partition was joined: look up now
	mu    sync.Mutex
	found map[string]providerLookup
}

// joined asks for a lookup soon, for a newly joined partition.
func (c *providerCache) joined() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

type providerLookup struct {
	peers []string
	at    time.Time
}

func (c *providerCache) get(topic string) ([]string, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.found[topic]
	return l.peers, l.at
}

func (c *providerCache) set(topic string, peers []string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.found == nil {
		c.found = make(map[string]providerLookup)
	}
	c.found[topic] = providerLookup{peers: peers, at: at}
}

// lookupProviders asks the DHT which peers provide the joined partitions
// (the same records pubsub's discovery advertises and finds members by)
// until ctx ends: every providerInterval the providerBatch partitions
// looked up longest ago, and a newly joined one a moment after its join.
func (n *Node) lookupProviders(ctx context.Context) {
	if n.dht == nil || n.noProviderLookup {
		return
	}
	disc := drouting.NewRoutingDiscovery(n.dht)
	t := time.NewTicker(providerInterval)
	defer t.Stop()
	for {
		for _, topic := range n.providers.due(n.joinedTopics(), providerBatch) {
			if ctx.Err() != nil {
				return
			}
			n.providers.set(topic, n.findProviders(ctx, disc, topic), n.now())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.providers.kick:
			// Give pubsub's discovery a moment to advertise the new
			// partition and connect to its first members.
			select {
			case <-ctx.Done():
				return
			case <-time.After(providerSettle):
			}
		}
	}
}

func (n *Node) joinedTopics() []string {
	var topics []string
	n.joined.Range(func(k, _ any) bool {
		topics = append(topics, k.(string))
		return true
	})
	return topics
}

// due picks at most max of topics, those never looked up first, then
// those looked up longest ago.
func (c *providerCache) due(topics []string, max int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	slices.SortStableFunc(topics, func(a, b string) int { return c.found[a].at.Compare(c.found[b].at) })
	return topics[:min(len(topics), max)]
}

func (n *Node) findProviders(ctx context.Context, disc *drouting.RoutingDiscovery, topic string) []string {
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	// pubsub advertises a topic under "floodsub:" + its name.
	found, err := disc.FindPeers(ctx, "floodsub:"+topic, discovery.Limit(providerLimit))
	if err != nil {
		n.log.Debug("dht provider lookup", "topic", topic, "err", err)
		return nil
	}
	var out []string
	for info := range found {
		out = append(out, info.ID.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}
