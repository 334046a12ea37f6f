package overlay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

const (
	topicPrefix = "/tributary/2/" // + StreamPartID: versioned, so a format change can move to new topics (2: gossip bundles)
	dhtPrefix   = "/tributary"    // a DHT of our own, apart from the IPFS network
	mdnsService = "tributary-overlay"
	dialTimeout = 15 * time.Second
	protectTag  = "tributary-protected" // bootstrap and configured protected peers: never trimmed
)

// Node is a Tributary overlay node: a libp2p host, its GossipSub router
// and discovery. Methods are safe for concurrent use.
type Node struct {
	cfg       Config
	log       *slog.Logger
	host      host.Host
	dht       *dht.IpfsDHT // nil when disabled
	ps        *pubsub.PubSub
	metrics   *metrics
	verify    *verifyPool // checks resend answers (verifypool.go)
	asks      *askSlots   // our resend requests open to each peer (admission.go)
	queue     *queueClock // when gossip arrived, for shedding; nil: never shed (shed.go)
	recent    *recentIDs  // messages accepted lately, in every partition: not verified again (bundle.go)
	bootstrap []peer.AddrInfo
	now       func() time.Time
	cancel    context.CancelFunc // stops pubsub

	joined    sync.Map // topic name → *Partition, read by the tracer without locks
	scores    atomic.Pointer[map[peer.ID]float64]
	redial    *redialer
	subs      *subscriptionFilter
	providers providerCache // DHT provider lookups of the joined partitions
	// noProviderLookup: see nodeOptions.
	noProviderLookup bool

	mu     sync.Mutex
	parts  map[string]*Partition
	closed bool
}

// nodeOptions are knobs that tests set; production uses the zero value.
type nodeOptions struct {
	heartbeat   time.Duration    // GossipSub heartbeat; 0 means libp2p's 1 s
	scorePeriod time.Duration    // how often peer scores are snapshotted; 0 means 10 s
	dhtMode     dht.ModeOpt      // 0 (ModeAuto) is replaced by ModeAutoServer
	now         func() time.Time // clock for timestamp checks; nil means time.Now
	// outboundQueue is pubsub's queue of RPCs to each peer; 0 means
	// peerOutboundQueue (a tiny one makes send losses in tests).
	outboundQueue int
	// noMemberRedial redials bootstrap peers only, not lost partition
	// members (mocknet clusters: see scale_test.go).
	noMemberRedial bool
	// noProviderLookup skips the status page's DHT provider lookups
	// (mocknet clusters: lookups dial nodes that are closing).
	noProviderLookup bool

	// Set by start: the metrics the host's resource manager already counts
	// into (nil: newNode creates them), and the peers always let in.
	metrics   *metrics
	protected []peer.ID
}

// New starts a node listening on cfg.ListenAddrs. Call Run to keep its
// bootstrap connections and LAN discovery going, and Close to stop it.
func New(cfg Config) (*Node, error) {
	return start(cfg, nodeOptions{})
}

func start(cfg Config, opts nodeOptions) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	bootstrap, err := parsePeers(cfg.BootstrapPeers)
	if err != nil {
		return nil, fmt.Errorf("overlay config: %w", err)
	}
	protected, err := parseProtected(cfg.ProtectedPeers)
	if err != nil {
		return nil, fmt.Errorf("overlay config: %w", err)
	}
	for _, b := range bootstrap {
		protected = append(protected, b.ID)
	}
	key, err := loadIdentity(cfg.IdentityFile, cfg.Logger)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, cfg.Logger.With("component", "overlay"), cfg.LogRepeatInterval)
	if err != nil {
		return nil, err
	}
	h, err := newHost(&cfg, key, bootstrap, protected, m.refused)
	if err != nil {
		return nil, err
	}
	opts.metrics, opts.protected = m, protected
	n, err := newNode(cfg, h, bootstrap, opts)
	if err != nil {
		return nil, errors.Join(err, h.Close())
	}
	return n, nil
}

// newNode builds the overlay on an existing host (a mocknet host in tests).
// cfg must have its defaults set. The node owns h from now on.
func newNode(cfg Config, h host.Host, bootstrap []peer.AddrInfo, opts nodeOptions) (*Node, error) {
	log := cfg.Logger.With("component", "overlay")
	m := opts.metrics
	var err error
	if m == nil {
		if m, err = newMetrics(cfg.Registerer, log, cfg.LogRepeatInterval); err != nil {
			return nil, err
		}
	}
	n := &Node{
		cfg:       cfg,
		log:       log,
		host:      h,
		metrics:   m,
		verify:    newVerifyPool(cfg.Resend.VerifyWorkers, m.resend.verifyWaits, log),
		asks:      newAskSlots(cfg.Resend.MaxStreamsPerPeer),
		recent:    newRecentIDs(recentSize),
		bootstrap: bootstrap,
		now:       opts.now,
		parts:     make(map[string]*Partition),
		providers: providerCache{kick: make(chan struct{}, 1)},

		noProviderLookup: opts.noProviderLookup,
	}
	if cfg.ShedQueueWait > 0 || cfg.ShedQueueDepth > 0 {
		n.queue = newQueueClock(time.Now)
	}
	if n.now == nil {
		n.now = time.Now
	}
	n.subs = newSubscriptionFilter(cfg.MaxPeerTopics, func(topic string) bool { return n.lookupPartition(topic) != nil }, m.refused)
	for _, b := range bootstrap {
		h.Peerstore().AddAddrs(b.ID, b.Addrs, peerstore.PermanentAddrTTL)
		h.ConnManager().Protect(b.ID, protectTag)
	}
	for _, id := range opts.protected {
		h.ConnManager().Protect(id, protectTag)
	}
	n.redial = newRedialer(n, !opts.noMemberRedial)
	h.Network().Notify(notifiee{n.redial})
	if !cfg.DisableDHT {
		if n.dht, err = newDHT(h, bootstrap, opts.dhtMode); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.ps, err = pubsub.NewGossipSub(ctx, h, n.pubsubOptions(opts)...)
	if err != nil {
		cancel()
		return nil, errors.Join(fmt.Errorf("start gossipsub: %w", err), n.closeDHT())
	}
	n.log.Info("overlay node started", "peer_id", h.ID().String(), "addrs", n.Addrs(), "listen", h.Network().ListenAddresses())
	return n, nil
}

func newDHT(h host.Host, bootstrap []peer.AddrInfo, mode dht.ModeOpt) (*dht.IpfsDHT, error) {
	if mode == dht.ModeAuto {
		mode = dht.ModeAutoServer // serve until AutoNAT says we are unreachable
	}
	d, err := dht.New(h,
		dht.Mode(mode),
		dht.ProtocolPrefix(dhtPrefix),
		dht.BootstrapPeers(bootstrap...),
		dht.DisableValues(), // only provider records: "who carries this topic"
	)
	if err != nil {
		return nil, fmt.Errorf("start overlay DHT: %w", err)
	}
	return d, nil
}

func (n *Node) pubsubOptions(opts nodeOptions) []pubsub.Option {
	scorePeriod := opts.scorePeriod
	if scorePeriod == 0 {
		scorePeriod = 10 * time.Second
	}
	o := []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(gossipID),
		pubsub.WithSubscriptionFilter(n.subs),
		pubsub.WithGossipSubParams(gossipSubParams(opts.heartbeat)),
		pubsub.WithPeerScore(peerScoreParams(), peerScoreThresholds()),
		pubsub.WithPeerScoreInspect(n.storeScores, scorePeriod),
		pubsub.WithFloodPublish(false), // publish to the mesh only: a Pi must not send each reading to every peer
		pubsub.WithPeerExchange(true),  // pruned peers learn of others: the mesh heals after churn
		pubsub.WithPeerOutboundQueueSize(cmp.Or(opts.outboundQueue, peerOutboundQueue)),
		pubsub.WithValidateQueueSize(validateQueue),
		pubsub.WithSeenMessagesTTL(n.cfg.SeenTTL),
		pubsub.WithMaxMessageSize(maxBundleSize(n.cfg.Limits) + rpcOverhead),
		pubsub.WithRawTracer(&tracer{lookup: n.lookupPartition, closed: n.streamClosed, queue: n.queue}),
		pubsub.WithLogger(slog.New(quietPubsub(n.cfg.Logger.Handler())).With("component", "pubsub")),
	}
	if n.dht != nil {
		// pubsub advertises every joined topic in the DHT and looks up
		// members of topics with fewer than Dlo peers, every second.
		o = append(o, pubsub.WithDiscovery(drouting.NewRoutingDiscovery(n.dht)))
	}
	return o
}

// storeScores keeps the latest peer score snapshot and counts the
// penalised peers for the metric.
func (n *Node) storeScores(s map[peer.ID]float64) {
	bad := 0
	for _, v := range s {
		if v < 0 {
			bad++
		}
	}
	n.metrics.penalised.Set(float64(bad))
	n.scores.Store(&s)
}

// streamClosed forgets id as a mesh neighbour in every partition. It runs
// on pubsub's event loop, so it must not block.
func (n *Node) streamClosed(id peer.ID) {
	n.subs.forget(id) // pubsub forgot its subscriptions
	n.joined.Range(func(_, v any) bool {
		v.(*Partition).mesh.remove(id)
		return true
	})
	if n.host.Network().Connectedness(id) == network.Connected && n.redial.isMember(id) {
		// A duplicate connection closed: pubsub forgot the peer's
		// subscriptions, which the peer will not send again.
		time.AfterFunc(resyncAfter, func() { n.resyncIfUnlisted(id) })
	}
}

// resyncIfUnlisted resynchronises id if it is still connected but listed
// in none of our partitions.
func (n *Node) resyncIfUnlisted(id peer.ID) {
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed || n.host.Network().Connectedness(id) != network.Connected {
		return
	}
	listed := false
	n.joined.Range(func(_, v any) bool {
		listed = slices.Contains(n.ps.ListPeers(v.(*Partition).topic), id)
		return !listed
	})
	if !listed {
		n.resync(id, n.log)
	}
}

func (n *Node) lookupPartition(topic string) *Partition {
	if v, ok := n.joined.Load(topic); ok {
		return v.(*Partition)
	}
	return nil
}

// ID returns the node's libp2p peer ID.
func (n *Node) ID() string { return n.host.ID().String() }

// Addrs returns the node's listen addresses with its /p2p/ ID, the form
// other nodes take as bootstrap peers.
func (n *Node) Addrs() []string {
	infos := peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
	mas, err := peer.AddrInfoToP2pAddrs(&infos)
	if err != nil {
		return nil
	}
	out := make([]string, len(mas))
	for i, a := range mas {
		out[i] = a.String()
	}
	return out
}

// ConnectedPeers returns the number of peers with an open connection.
func (n *Node) ConnectedPeers() int { return len(n.host.Network().Peers()) }

// Run keeps the node connected: it starts mDNS, bootstraps the DHT and
// redials lost bootstrap peers and partition members with exponential
// backoff (from 200 ms up to RedialInterval); with a DHT it looks up the
// providers of the joined partitions every 30 s (PartitionStates). It returns nil when ctx
// ends; the node keeps running until Close.
func (n *Node) Run(ctx context.Context) error {
	if !n.cfg.DisableMDNS {
		svc := mdns.NewMdnsService(n.host, mdnsService, &mdnsNotifee{ctx: ctx, n: n})
		if err := svc.Start(); err != nil {
			n.log.Warn("mdns discovery unavailable", "err", err)
		} else {
			defer svc.Close()
		}
	}
	if n.dht != nil {
		if err := n.dht.Bootstrap(ctx); err != nil {
			n.log.Warn("dht bootstrap failed", "err", err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.lookupProviders(ctx) })
	n.redial.run(ctx)
	wg.Wait()
	return nil
}

// mdnsNotifee connects to nodes found on the LAN.
type mdnsNotifee struct {
	ctx context.Context
	n   *Node
}

func (m *mdnsNotifee) HandlePeerFound(pi peer.AddrInfo) {
	if pi.ID == m.n.host.ID() {
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, dialTimeout)
	defer cancel()
	if err := m.n.host.Connect(ctx, pi); err != nil {
		m.n.log.Debug("lan peer unreachable", "peer", pi.ID.String(), "err", err)
		return
	}
	m.n.log.Info("connected to lan peer", "peer", pi.ID.String())
}

// Close leaves all partitions and stops the node. A second call returns an
// error wrapping net.ErrClosed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return fmt.Errorf("close overlay node: %w", net.ErrClosed)
	}
	n.closed = true
	parts := make([]*Partition, 0, len(n.parts))
	for _, p := range n.parts {
		parts = append(parts, p)
	}
	n.mu.Unlock()

	// Pubsub stops before the partitions are left and the host closes, so
	// no PRUNE goes out: a peer that receives one backs off from us for a
	// minute, and a gateway restarted within that minute would find no
	// mesh. Peers see the connection close and drop us at once instead.
	n.cancel()
	errs := []error{n.host.Close()}
	for _, p := range parts {
		errs = append(errs, p.Leave())
	}
	errs = append(errs, n.closeDHT())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close overlay node: %w", err)
	}
	n.log.Info("overlay node stopped")
	return nil
}

func (n *Node) closeDHT() error {
	if n.dht == nil {
		return nil
	}
	if err := n.dht.Close(); err != nil {
		return fmt.Errorf("close overlay DHT: %w", err)
	}
	return nil
}
