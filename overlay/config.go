package overlay

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// Defaults for zero Config fields.
const (
	DefaultPort         = 4001
	DefaultMaxConns     = 64               // high watermark; a Pi handles this comfortably
	DefaultMaxClockSkew = 15 * time.Minute // generous: gateways without an RTC drift until NTP syncs
	// DefaultRedialInterval: a gateway whose uplink comes back should find
	// its overlay again within seconds, and a few dials are cheap.
	DefaultRedialInterval = 5 * time.Second
	// DefaultMaxPeerTopics is far above the partitions a gateway joins,
	// yet bounds what one peer's subscriptions cost (about 0.3 KiB each).
	DefaultMaxPeerTopics = 1024
	// DefaultMaxConnsPerIP and DefaultMaxConnsPerSubnet (IPv4 /24, IPv6
	// /48) let a LAN of gateways in while one host, or one network, cannot
	// take every inbound slot.
	DefaultMaxConnsPerIP     = 16
	DefaultMaxConnsPerSubnet = 32
	// DefaultSeenTTL: see Config.SeenTTL and seen_ttl in gossip.go.
	DefaultSeenTTL = 10 * time.Second
)

// Config configures a Node. The zero value is usable for a node that
// listens on all IPv4 interfaces on DefaultPort with every discovery and NAT
// traversal mechanism on.
type Config struct {
	// IdentityFile holds the node's libp2p private key (Ed25519, libp2p
	// protobuf encoding). It is created with mode 0600 if missing. If empty,
	// a fresh key is generated for each run (tests only: peers would see a
	// new node after every restart).
	IdentityFile string

	// ListenAddrs are multiaddrs to listen on. If empty, ListenAddrsFor("0.0.0.0", DefaultPort).
	ListenAddrs []string

	// AnnounceAddrs, if set, are the only addresses the node tells peers
	// it has (a port forward, a public name, a proxy in tests); otherwise
	// libp2p announces its listen and observed addresses.
	AnnounceAddrs []string

	// BootstrapPeers are multiaddrs ending in /p2p/<peer ID>; the node keeps
	// connections to them and uses them as DHT entry points and relays.
	BootstrapPeers []string

	// RedialInterval is how often lost bootstrap connections are dialled
	// again. If zero, DefaultRedialInterval.
	RedialInterval time.Duration

	DisableDHT          bool // no Kademlia DHT (stream partitions are then found only via bootstrap peers and mDNS)
	DisableMDNS         bool // no LAN discovery by multicast DNS
	DisableRelay        bool // no circuit-relay client, relay service or auto relay
	DisableHolePunching bool // no DCUtR hole punching
	DisableAutoNAT      bool // no AutoNAT (v1 service, v2 client) and no UPnP/NAT-PMP port mapping

	// MaxConns is the connection manager's high watermark; it trims to 3/4
	// of it. The resource manager allows 2× (bursts during discovery).
	// If zero, DefaultMaxConns.
	MaxConns int

	// MaxConnsPerIP and MaxConnsPerSubnet bound the connections (either
	// direction) with one address (IPv4, IPv6 /64) and one network (IPv4
	// /24, IPv6 /48), loopback included. If zero, DefaultMaxConnsPerIP and
	// DefaultMaxConnsPerSubnet.
	MaxConnsPerIP     int
	MaxConnsPerSubnet int

	// ProtectedPeers always get a connection, whatever the limits (peer
	// IDs, or multiaddrs ending in /p2p/<peer ID>), and are never trimmed:
	// the storers and publishers this gateway depends on. Bootstrap peers
	// are protected too. A protected peer still counts against its
	// address's MaxConnsPerIP.
	ProtectedPeers []string

	// MaxPeerTopics bounds the subscriptions tracked per peer, and per RPC
	// (of an RPC announcing more, only topics this node joined are kept).
	// Subscriptions to topics this node joined are always tracked. If
	// zero, DefaultMaxPeerTopics.
	MaxPeerTopics int

	// LogRepeatInterval is how often a refusal of one kind is logged at
	// most. If zero, DefaultLogRepeatInterval.
	LogRepeatInterval time.Duration

	// Policy says who may publish on a stream. If nil, AllowList(nil):
	// only the owner address of 0x<address>/… streams.
	Policy Policy

	// Limits bound accepted messages. Zero values mean streamr's defaults
	// (1 MiB encoded, the Streamr network's maximum).
	Limits streamr.Limits

	// MaxClockSkew is how far in the future a message timestamp may be.
	// If zero, DefaultMaxClockSkew.
	MaxClockSkew time.Duration

	// ShedQueueWait is how long a gossiped message may wait in pubsub's
	// validation queue; one that waited longer is shed: dropped without
	// being decoded or verified, counted (drops_total{reason="shed"}) and
	// left for the receiver's gap fill to pull by resend (see the package
	// doc's flow control). Zero or negative: never shed (the queue drops
	// what overflows it); SuggestedShedQueueWait is a value to turn it on
	// with.
	ShedQueueWait time.Duration

	// ShedQueueDepth sheds like ShedQueueWait, by how many gossiped
	// messages are queued for validation instead of how long one waited:
	// a message taken from the queue while more than this many wait is
	// shed. The queue overflows by count (4,096), whatever the rate, and
	// a receiver starved of CPU for a moment at a modest rate queues up
	// briefly without being overrun. Zero or negative: off.
	// SuggestedShedQueueDepth is a value to turn it on with.
	ShedQueueDepth int
	// SeenTTL is how long GossipSub's duplicate filter remembers a message
	// ID at least (pubsub sweeps expired IDs once a minute, so an ID stays
	// up to a minute longer). At 2,000 msg/s every second of it is ~0.3 MB
	// of heap (two ID maps); a copy that arrives after it is validated
	// again and dropped by the bridge's ordering (a duplicate by chain
	// position, tributary_order_stale_total). If zero, DefaultSeenTTL.
	SeenTTL time.Duration

	// ReannounceChains is how many chains each partition keeps the newest
	// message of, to publish again after messages were dropped at a full
	// queue to a peer (see the package doc's flow control); the least
	// recently updated chain is forgotten first. If zero,
	// DefaultReannounceChains; negative: never re-announce.
	ReannounceChains int

	// Resend bounds the resend answers this node serves and accepts.
	Resend ResendConfig

	// Logger receives the node's logs. If nil, logs are discarded.
	Logger *slog.Logger

	// Registerer receives the node's Prometheus metrics. If nil, metrics
	// are kept but not registered.
	Registerer prometheus.Registerer
}

// ListenAddrsFor returns the TCP and QUIC multiaddrs for an IPv4 or IPv6
// address and port, the form ListenAddrs takes.
func ListenAddrsFor(ip string, port int) []string {
	proto := "ip4"
	for _, c := range ip {
		if c == ':' {
			proto = "ip6"
			break
		}
	}
	p := strconv.Itoa(port)
	return []string{
		"/" + proto + "/" + ip + "/tcp/" + p,
		"/" + proto + "/" + ip + "/udp/" + p + "/quic-v1",
	}
}

func (c *Config) setDefaults() {
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = ListenAddrsFor("0.0.0.0", DefaultPort)
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	c.MaxConnsPerIP = cmp.Or(c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	c.MaxConnsPerSubnet = cmp.Or(c.MaxConnsPerSubnet, DefaultMaxConnsPerSubnet)
	c.MaxPeerTopics = cmp.Or(c.MaxPeerTopics, DefaultMaxPeerTopics)
	c.LogRepeatInterval = cmp.Or(c.LogRepeatInterval, DefaultLogRepeatInterval)
	if c.Policy == nil {
		c.Policy = AllowList(nil)
	}
	if c.Limits.MaxMessageBytes == 0 {
		c.Limits.MaxMessageBytes = streamr.DefaultMaxFrame
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.RedialInterval == 0 {
		c.RedialInterval = DefaultRedialInterval
	}
	c.SeenTTL = cmp.Or(c.SeenTTL, DefaultSeenTTL)
	c.ReannounceChains = cmp.Or(c.ReannounceChains, DefaultReannounceChains)
	c.Resend.setDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

func (c *Config) validate() error {
	if c.MaxConns < 4 {
		return fmt.Errorf("overlay config: max_conns %d is below 4: a partition needs 4 neighbours", c.MaxConns)
	}
	if c.MaxConnsPerIP < 0 || c.MaxConnsPerSubnet < 0 || c.MaxPeerTopics < 0 || c.LogRepeatInterval < 0 {
		return fmt.Errorf("overlay config: negative peer limit (max_conns_per_ip %d, max_conns_per_subnet %d, max_peer_topics %d, log_repeat_interval %s)",
			c.MaxConnsPerIP, c.MaxConnsPerSubnet, c.MaxPeerTopics, c.LogRepeatInterval)
	}
	if c.Limits.MaxMessageBytes < 0 || c.Limits.MaxContentBytes < 0 {
		return fmt.Errorf("overlay config: negative message size limit")
	}
	if c.MaxClockSkew < 0 {
		return fmt.Errorf("overlay config: max_clock_skew %s is negative", c.MaxClockSkew)
	}
	if c.SeenTTL < MinSeenTTL {
		return fmt.Errorf("overlay config: seen_ttl %s is below %s: copies gossip still carries would pass the duplicate filter", c.SeenTTL, MinSeenTTL)
	}
	return c.Resend.validate()
}
