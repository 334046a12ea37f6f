package gateway

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/streamr"
)

// OverlayConfig is the [overlay] table: the peer-to-peer side.
type OverlayConfig struct {
	Enabled        bool             `toml:"enabled"`
	Listen         []string         `toml:"listen"`
	Announce       []string         `toml:"announce"`
	Bootstrap      []string         `toml:"bootstrap"`
	RedialInterval Duration         `toml:"redial_interval"`
	MDNS           bool             `toml:"mdns"`
	DHT            bool             `toml:"dht"`
	NAT            bool             `toml:"nat"`
	MaxConnections int              `toml:"max_connections"`
	Publishers     []PublishersRule `toml:"publishers"`
	Retry          Duration         `toml:"retry"`
	GapFillTimeout Duration         `toml:"gap_fill_timeout"`
	ResendRetry    Duration         `toml:"resend_retry"`
	MaxGapRequests int              `toml:"max_gap_requests"`
	// Bounds of the Orderers (see bridge.OrderConfig).
	MaxChains             int      `toml:"max_chains"`
	MaxChainsPerPublisher int      `toml:"max_chains_per_publisher"`
	MaxHeldMessages       int      `toml:"max_held_messages"`
	ChainIdleTimeout      Duration `toml:"chain_idle_timeout"`
	MaxGapFills           int      `toml:"max_gap_fills"`
	FillShareBytes        int      `toml:"fill_share_bytes"` // fetched messages kept for the other orderers of a partition
	LiveMaxAge            Duration `toml:"live_max_age"`     // 0: no bound
	// Limits against hostile peers (issue 13).
	MaxConnsPerIP           int      `toml:"max_conns_per_ip"`
	MaxConnsPerSubnet       int      `toml:"max_conns_per_subnet"`
	ProtectedPeers          []string `toml:"protected_peers"`
	MaxPeerTopics           int      `toml:"max_peer_topics"`
	ResendMaxStreams        int      `toml:"resend_max_streams"`
	ResendMaxStreamsPerPeer int      `toml:"resend_max_streams_per_peer"`
	ResendReservedStreams   int      `toml:"resend_reserved_streams"`
	// Catch-up speed (issue 11): answers read from the store once up to
	// resend_buffer_bytes; resend answers verified on resend_verify_workers.
	ResendBufferBytes   int `toml:"resend_buffer_bytes"`
	ResendVerifyWorkers int `toml:"resend_verify_workers"`
	// Live-path flow control (issue 11): gossip that waited longer than
	// this for validation is shed and pulled by gap fill; "0s": never.
	ShedQueueWait Duration `toml:"shed_queue_wait"`
	// The same by queue depth: gossip taken for validation while more than
	// this many wait is shed; 0: never.
	ShedQueueDepth int `toml:"shed_queue_depth"`
	// How long the gossip duplicate filter remembers a message ID (heap:
	// ~0.3 MB per second of it at 2,000 msg/s; see overlay.Config.SeenTTL).
	SeenTTL Duration `toml:"seen_ttl"`
	// Chains per partition whose newest message is kept to publish again
	// after a drop at a full send queue (overlay.Config.ReannounceChains);
	// negative: never.
	ReannounceChains int `toml:"reannounce_chains"`
	// Partitions the forwarder joins (issue 13): every MQTT topic can
	// name one.
	MaxForwardPartitions int      `toml:"max_forward_partitions"`
	PartitionIdleTimeout Duration `toml:"partition_idle_timeout"`
}

// applyLimits copies the peer limits into cfg; [receipts] peers (storers)
// are protected too.
func (o OverlayConfig) applyLimits(cfg *overlay.Config, storers []string) {
	cfg.MaxConnsPerIP, cfg.MaxConnsPerSubnet = o.MaxConnsPerIP, o.MaxConnsPerSubnet
	cfg.ProtectedPeers = append(slices.Clone(o.ProtectedPeers), storers...)
	cfg.MaxPeerTopics = o.MaxPeerTopics
	cfg.Resend.MaxStreams, cfg.Resend.MaxStreamsPerPeer, cfg.Resend.ReservedStreams = o.ResendMaxStreams, o.ResendMaxStreamsPerPeer, o.ResendReservedStreams
	cfg.Resend.BufferBytes, cfg.Resend.VerifyWorkers = o.ResendBufferBytes, o.ResendVerifyWorkers
	cfg.ShedQueueWait, cfg.ShedQueueDepth = time.Duration(o.ShedQueueWait), o.ShedQueueDepth
	cfg.SeenTTL = time.Duration(o.SeenTTL)
	cfg.ReannounceChains = o.ReannounceChains
}

// ReceiptsConfig is the [receipts] table: whose delivery receipts
// retention waits for before deleting this gateway's messages.
type ReceiptsConfig struct {
	Required     string   `toml:"required"` // none, any-storer or all-listed
	Peers        []string `toml:"peers"`    // peer IDs for all-listed
	PollInterval Duration `toml:"poll_interval"`
	Timeout      Duration `toml:"timeout"`
}

// StoreRuleConfig is one [[store]] table: this node keeps the stream
// partitions' messages and answers resend requests for them.
type StoreRuleConfig struct {
	Stream     string `toml:"stream"`
	Partitions []int  `toml:"partitions"`
	// AnswerKeyRequests makes this node a key server for the history it
	// stores (issue 18): it obtains the group keys of the messages (the
	// publisher must let it subscribe) and answers readers' key requests
	// while the publisher is offline. Readers take its answers only if it
	// may publish on the stream.
	AnswerKeyRequests bool `toml:"answer_key_requests"`
	// Subscribers are who may get those keys from here without [registry]
	// (with it, holders of Subscribe on the stream, too).
	Subscribers []string `toml:"subscribers"`
}

// PublishersRule adds publishers allowed on a stream besides its owner.
type PublishersRule struct {
	Stream string   `toml:"stream"`
	Allow  []string `toml:"allow"`
}

// SubscribeRuleConfig is one [[subscribe]] table.
type SubscribeRuleConfig struct {
	Stream     string `toml:"stream"`
	Partitions []int  `toml:"partitions"`
	Topic      string `toml:"topic"`
	Metadata   bool   `toml:"metadata"`
	Source     string `toml:"source"` // "overlay" (default) or "streamr_network"
}

func (c *Config) overlayConfig(log *slog.Logger, reg prometheus.Registerer) (overlay.Config, error) {
	o := c.Overlay
	allow := make(map[string][]string)
	for _, p := range o.Publishers {
		allow[p.Stream] = append(allow[p.Stream], p.Allow...)
	}
	policy, err := overlay.ParseAllowList(allow)
	if err != nil {
		return overlay.Config{}, fmt.Errorf("overlay.publishers: %w", err)
	}
	cfg := overlay.Config{
		IdentityFile:        filepath.Join(c.StateDir, "peer.key"),
		ListenAddrs:         o.Listen,
		AnnounceAddrs:       o.Announce,
		BootstrapPeers:      o.Bootstrap,
		RedialInterval:      time.Duration(o.RedialInterval),
		DisableDHT:          !o.DHT,
		DisableMDNS:         !o.MDNS,
		DisableRelay:        !o.NAT,
		DisableHolePunching: !o.NAT,
		DisableAutoNAT:      !o.NAT,
		MaxConns:            o.MaxConnections,
		Policy:              policy,
		Logger:              log,
		Registerer:          reg,
	}
	o.applyLimits(&cfg, c.Receipts.Peers)
	return cfg, nil
}

// forwardConfig is how the forwarder retries and which partitions it
// keeps joined.
func (c *Config) forwardConfig(log *slog.Logger, reg prometheus.Registerer) bridge.ForwardConfig {
	return bridge.ForwardConfig{
		Retry:         time.Duration(c.Overlay.Retry),
		MaxPartitions: c.Overlay.MaxForwardPartitions,
		IdleTimeout:   time.Duration(c.Overlay.PartitionIdleTimeout),
		Registerer:    reg,
		Logger:        log,
	}
}

func (c *Config) storeParts() ([]streamr.StreamPartID, error) {
	var parts []streamr.StreamPartID
	for i, r := range c.Store {
		p, err := r.parts(i + 1)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p...)
	}
	return parts, nil
}

// parts are the stream partitions of the n-th [[store]] table.
func (r StoreRuleConfig) parts(n int) ([]streamr.StreamPartID, error) {
	id, err := streamr.ParseStreamID(r.Stream)
	if err != nil {
		return nil, fmt.Errorf("store %d: %w", n, err)
	}
	partitions := r.Partitions
	if len(partitions) == 0 {
		partitions = []int{0}
	}
	parts := make([]streamr.StreamPartID, 0, len(partitions))
	for _, p := range partitions {
		part, err := streamr.NewStreamPartID(id, p)
		if err != nil {
			return nil, fmt.Errorf("store %d: %w", n, err)
		}
		parts = append(parts, part)
	}
	return parts, nil
}

// orderConfig is the gap-fill behaviour shared by delivery and storing.
func (c *Config) orderConfig(name string, log *slog.Logger, reg prometheus.Registerer) bridge.OrderConfig {
	return bridge.OrderConfig{
		Name:           name,
		GapFillTimeout: time.Duration(c.Overlay.GapFillTimeout),
		RetryInterval:  time.Duration(c.Overlay.ResendRetry),
		MaxGapRequests: c.Overlay.MaxGapRequests,
		MaxChains:      c.Overlay.MaxChains,
		MaxHeldTotal:   c.Overlay.MaxHeldMessages,
		IdleTimeout:    time.Duration(c.Overlay.ChainIdleTimeout),
		MaxFills:       c.Overlay.MaxGapFills,
		LiveMaxAge:     liveMaxAge(c.Overlay.LiveMaxAge),
		Registerer:     reg,

		MaxChainsPerPublisher: c.Overlay.MaxChainsPerPublisher,
		Logger:                log.With("orderer", name),
	}
}

// liveMaxAge maps the config's "0s" (no bound) onto OrderConfig's negative.
func liveMaxAge(d Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return time.Duration(d)
}

// subscriptions compiles the [[subscribe]] tables of one source
// (sourceOverlay includes those that name none; "": every table).
func (c *Config) subscriptions(source string) ([]*bridge.Subscription, error) {
	subs := make([]*bridge.Subscription, 0, len(c.Subscribe))
	for i, s := range c.Subscribe {
		if src := cmp.Or(s.Source, sourceOverlay); source != "" && src != source {
			continue
		}
		sub, err := bridge.CompileSubscription(bridge.SubscribeConfig{
			Stream: s.Stream, Partitions: s.Partitions, Topic: s.Topic, Metadata: s.Metadata,
		}, i)
		if err != nil {
			return nil, err
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// localDelivery publishes the [[subscribe]] tables' stream partitions on local
// MQTT. Subscriptions are split into layers in which no two share a stream
// partition, and each layer orders through its own Orderer: an Orderer
// delivers a message once, so two subscriptions of one partition in one
// Orderer would leave the second with nothing but stale messages. Layer 1
// keeps the positions named "mqtt" (those of a config with one
// subscription per partition); the n-th subscription of a partition, in
// config order, keeps its positions as "mqtt-n".
type localDelivery struct {
	layers []deliveryLayer
}

type deliveryLayer struct {
	deliverer *bridge.Deliverer // runs the layer's Orderer
	subs      []*bridge.Subscription
	overlay   bridge.Overlay // where the layer's messages come from
}

// deliverySource is the subscriptions of one source and what they join.
type deliverySource struct {
	subs     []*bridge.Subscription
	name     string // of the orderers' positions: name, name-2, …
	overlay  bridge.Overlay
	resender bridge.Resender // nil: gaps are waited out, then skipped
}

// newDelivery builds the layers of every source: the overlay's, then the
// Streamr Network's (whose proxies serve no resends).
func newDelivery(s *system) *localDelivery {
	var sources []deliverySource
	if s.node != nil {
		sources = append(sources, deliverySource{s.subs, "mqtt", s.adapter, s.fills})
	}
	if s.snAdapter != nil {
		sources = append(sources, deliverySource{subs: s.snSubs, name: "streamr_network", overlay: s.snAdapter})
	}
	d := &localDelivery{}
	var first *bridge.Deliverer
	for _, src := range sources {
		first = d.addLayers(s, src, first)
	}
	return d
}

// addLayers adds the layers of one source; their Deliverers share first's
// metrics (the first one built when first is nil), which it returns.
func (d *localDelivery) addLayers(s *system, src deliverySource, first *bridge.Deliverer) *bridge.Deliverer {
	for i, layer := range subscriptionLayers(src.subs) {
		name := src.name
		if i > 0 {
			name = fmt.Sprintf("%s-%d", src.name, i+1)
		}
		ocfg := s.cfg.orderConfig(name, s.log, s.reg)
		ocfg.Positions = bridge.DeliveryPositions(s.store, s.broker)
		if s.node != nil {
			ocfg.LastLoss = s.node.LastLoss
		}
		if src.resender != nil {
			ocfg.Resender = src.resender
			if src.resender == bridge.Resender(s.fills) {
				s.fills.Share(layerParts(layer)...)
			}
			// Backlogs arrive by resend (see bridge.Forwarder): a burst beyond
			// the held bound is fetched again, not given up.
			ocfg.KeepGaps = true
		}
		order := bridge.NewOrderer(ocfg)
		var dl *bridge.Deliverer
		if first == nil {
			first = bridge.NewDeliverer(s.key.PublisherID(), s.broker, order, s.reg, s.log)
			if s.e2ee != nil {
				first.SetKeyExchange(deliveryKeys{s.e2ee, s.keyTopics})
			}
			dl = first
		} else {
			dl = first.WithOrderer(order)
		}
		d.layers = append(d.layers, deliveryLayer{deliverer: dl, subs: layer, overlay: src.overlay})
	}
	return first
}

// layerParts lists the stream partitions of a layer's subscriptions.
func layerParts(layer []*bridge.Subscription) []streamr.StreamPartID {
	var parts []streamr.StreamPartID
	for _, sub := range layer {
		parts = append(parts, sub.Parts()...)
	}
	return parts
}

// subscriptionLayers puts each subscription in the first layer that has
// none of its stream partitions.
func subscriptionLayers(subs []*bridge.Subscription) [][]*bridge.Subscription {
	var layers [][]*bridge.Subscription
	var taken []map[streamr.StreamPartID]bool
	for _, s := range subs {
		i := 0
		for ; i < len(layers); i++ {
			if !anyTaken(taken[i], s.Parts()) {
				break
			}
		}
		if i == len(layers) {
			layers = append(layers, nil)
			taken = append(taken, map[streamr.StreamPartID]bool{})
		}
		layers[i] = append(layers[i], s)
		for _, p := range s.Parts() {
			taken[i][p] = true
		}
	}
	return layers
}

func anyTaken(taken map[streamr.StreamPartID]bool, parts []streamr.StreamPartID) bool {
	for _, p := range parts {
		if taken[p] {
			return true
		}
	}
	return false
}

// overlayAdapter gives the bridge one Join per stream partition: the
// forwarder and the subscriptions share a partition's overlay. Every
// Join returns its own handle; the overlay is left when the last handle
// leaves, so the forwarder leaving an idle partition never ends a
// subscription's or a storer's membership.
type overlayAdapter struct {
	node *overlay.Node

	mu     sync.Mutex
	joined map[streamr.StreamPartID]*joinedPart
}

type joinedPart struct {
	p        *overlay.Partition
	handles  int // joins not yet left
	mu       sync.Mutex
	delivers []handleDeliver // subscriptions and storers of the partition, in join order
}

type handleDeliver struct {
	h       *partHandle
	deliver func(*streamr.StreamMessage, []byte)
}

// partHandle is one Join's share of a joined partition.
type partHandle struct {
	a    *overlayAdapter
	part streamr.StreamPartID
	j    *joinedPart
	once sync.Once
	err  error
}

func newOverlayAdapter(node *overlay.Node) *overlayAdapter {
	return &overlayAdapter{node: node, joined: make(map[streamr.StreamPartID]*joinedPart)}
}

// Join implements bridge.Overlay.
func (a *overlayAdapter) Join(part streamr.StreamPartID, deliver func(*streamr.StreamMessage, []byte)) (bridge.Topic, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j, ok := a.joined[part]
	if !ok {
		j = &joinedPart{}
		p, err := a.node.Join(part, j.receive)
		if err != nil {
			return nil, err
		}
		j.p = p
		a.joined[part] = j
	}
	j.handles++
	h := &partHandle{a: a, part: part, j: j}
	if deliver != nil {
		j.mu.Lock()
		j.delivers = append(j.delivers, handleDeliver{h, deliver})
		j.mu.Unlock()
	}
	return h, nil
}

func (j *joinedPart) receive(d overlay.Delivery) {
	j.mu.Lock()
	delivers := j.delivers
	j.mu.Unlock()
	for _, hd := range delivers {
		hd.deliver(d.Msg, d.Encoded)
	}
}

// Publish implements bridge.Topic.
func (h *partHandle) Publish(ctx context.Context, encoded [][]byte) (int, error) {
	return h.j.p.PublishBatch(ctx, encoded)
}

// Leave implements bridge.Topic: the last handle of a partition leaves
// its overlay.
func (h *partHandle) Leave() error {
	h.once.Do(func() { h.err = h.a.leave(h) })
	return h.err
}

func (a *overlayAdapter) leave(h *partHandle) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	h.j.mu.Lock()
	// A fresh slice: receive may be ranging over the old one.
	h.j.delivers = slices.DeleteFunc(slices.Clone(h.j.delivers), func(hd handleDeliver) bool { return hd.h == h })
	h.j.mu.Unlock()
	if h.j.handles--; h.j.handles > 0 {
		return nil
	}
	delete(a.joined, h.part)
	return h.j.p.Leave()
}
