package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamrnet"
)

// StreamrNetworkConfig is the [streamr_network] table: proxy connections
// to nodes of the real Streamr Network (issue 15).
type StreamrNetworkConfig struct {
	// Proxies are WebSocket URLs of Streamr nodes that accept proxy
	// connections (wss:// on the public network).
	Proxies []string `toml:"proxies"`
	// Publish sends every stream partition this gateway publishes to the
	// Streamr Network too, from storage in chain order.
	Publish bool `toml:"publish"`

	// Limits on what a Streamr node sends; see streamrnet.Limits.
	MaxFrameBytes      Size     `toml:"max_frame_bytes"`
	MaxFramesPerSecond int      `toml:"max_frames_per_second"`
	MaxPendingRequests int      `toml:"max_pending_requests"`
	RequestTimeout     Duration `toml:"request_timeout"`
	DedupWindow        int      `toml:"dedup_window"`
	ReconnectMin       Duration `toml:"reconnect_min"`
	ReconnectMax       Duration `toml:"reconnect_max"`
	// KeyExchangeQueue bounds the group key requests and responses
	// waiting to be sent into the Streamr Network (issue 18).
	KeyExchangeQueue int `toml:"key_exchange_queue"`
	// DeliveryQueue bounds the received messages waiting for validation
	// and delivery; while it is full the proxies' reads wait.
	DeliveryQueue int `toml:"delivery_queue"`
}

// Source values of a [[subscribe]] table.
const (
	sourceOverlay        = "overlay"
	sourceStreamrNetwork = "streamr_network"
)

func defaultStreamrNetwork() StreamrNetworkConfig {
	return StreamrNetworkConfig{
		Proxies:            []string{},
		MaxFrameBytes:      Size(streamrnet.DefaultMaxFrameBytes),
		MaxFramesPerSecond: streamrnet.DefaultMaxFramesPerSecond,
		MaxPendingRequests: streamrnet.DefaultMaxPendingRequests,
		RequestTimeout:     Duration(streamrnet.DefaultRequestTimeout),
		DedupWindow:        streamrnet.DefaultDedupWindow,
		ReconnectMin:       Duration(streamrnet.DefaultMinBackoff),
		ReconnectMax:       Duration(streamrnet.DefaultMaxBackoff),
		KeyExchangeQueue:   256,
		DeliveryQueue:      1024,
	}
}

// streamrNetworkUsed reports whether the gateway talks to the Streamr Network.
func (c *Config) streamrNetworkUsed() bool {
	if c.StreamrNetwork.Publish {
		return true
	}
	return slices.ContainsFunc(c.Subscribe, func(s SubscribeRuleConfig) bool { return s.Source == sourceStreamrNetwork })
}

func (c *Config) validateStreamrNetwork() error {
	n := c.StreamrNetwork
	var errs []error
	for i, s := range c.Subscribe {
		if !oneOf(s.Source, "", sourceOverlay, sourceStreamrNetwork) {
			errs = append(errs, fmt.Errorf("subscribe %d (stream %q): source %q: want %q or %q", i+1, s.Stream, s.Source, sourceOverlay, sourceStreamrNetwork))
		}
	}
	for _, p := range n.Proxies {
		if err := streamrnet.ValidateProxyURL(p); err != nil {
			errs = append(errs, fmt.Errorf("streamr_network.proxies: %w", err))
		}
	}
	if c.streamrNetworkUsed() && len(n.Proxies) == 0 {
		errs = append(errs, errors.New(`streamr_network.proxies: empty, but streamr_network.publish is true or a [[subscribe]] has source = "streamr_network"`))
	}
	if n.MaxFrameBytes < 1024 || n.MaxFramesPerSecond <= 0 || n.MaxPendingRequests <= 0 || n.DedupWindow <= 0 || n.KeyExchangeQueue <= 0 || n.DeliveryQueue <= 0 {
		errs = append(errs, errors.New("streamr_network.max_frame_bytes (at least 1 KiB), max_frames_per_second, max_pending_requests, dedup_window, key_exchange_queue and delivery_queue: must be positive"))
	}
	if n.RequestTimeout <= 0 || n.ReconnectMin <= 0 || n.ReconnectMax < n.ReconnectMin {
		errs = append(errs, errors.New("streamr_network.request_timeout and reconnect_min: must be positive; reconnect_max: at least reconnect_min"))
	}
	return errors.Join(errs...)
}

func (c *Config) streamrNetConfig(userID []byte, deliver func(string, []byte), log *slog.Logger, reg prometheus.Registerer) streamrnet.Config {
	n := c.StreamrNetwork
	return streamrnet.Config{
		Proxies: n.Proxies,
		UserID:  userID,
		Dialer:  streamrnet.WebSocketDialer{},
		Deliver: deliver,
		Limits: streamrnet.Limits{
			MaxFrameBytes:      int(n.MaxFrameBytes),
			MaxFramesPerSecond: n.MaxFramesPerSecond,
			MaxPendingRequests: n.MaxPendingRequests,
			RequestTimeout:     time.Duration(n.RequestTimeout),
			DedupWindow:        n.DedupWindow,
			MinBackoff:         time.Duration(n.ReconnectMin),
			MaxBackoff:         time.Duration(n.ReconnectMax),
		},
		Registerer: reg,
		Logger:     log,
	}
}

// startStreamrNetwork builds the Streamr Network client, its forwarder
// (streamr_network.publish) and the adapter the subscriptions of source
// "streamr_network" join through. Nothing connects before Run.
func (s *system) startStreamrNetwork(flog bridge.ForwardLog) error {
	ocfg, err := s.cfg.overlayConfig(s.log, nil)
	if err != nil {
		return err
	}
	if s.registry != nil {
		ocfg.Policy = registryPolicy{s.registry}
	}
	s.snAdapter = newStreamrNetAdapter(ocfg, s.cfg.StreamrNetwork.DeliveryQueue, s.reg, s.log)
	client, err := streamrnet.New(s.cfg.streamrNetConfig(s.key.PublisherID(), s.snAdapter.enqueue, s.log, s.reg))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	s.snAdapter.client = client
	s.sn = client
	s.snKeys = newKXSender(client.Publish, s.cfg.StreamrNetwork.KeyExchangeQueue, time.Duration(s.cfg.Encryption.KeyRequestTimeout), s.reg, s.snAdapter.log)
	if s.cfg.StreamrNetwork.Publish {
		fcfg := s.cfg.forwardConfig(s.log, s.reg)
		fcfg.Name, fcfg.SendBacklog = "streamr_network", true
		if s.registry != nil {
			fcfg.Permissions, fcfg.Publisher = s.registry, s.key.PublisherID()
		}
		s.snForwarder = bridge.NewForwarder(flog, s.snAdapter, fcfg)
	}
	s.log.Info("Streamr Network proxies configured", "proxies", s.cfg.StreamrNetwork.Proxies, "publish", s.cfg.StreamrNetwork.Publish)
	return nil
}

// StreamrNetworkProxies reports the proxy connections (nil without
// [streamr_network]), for the status page.
func (g *Gateway) StreamrNetworkProxies() []streamr.ProxyState {
	if s := g.system(); s != nil && s.sn != nil {
		return s.sn.Proxies()
	}
	return nil
}

// streamrNetAdapter is the bridge.Overlay of the Streamr Network: the
// forwarder publishes through it and the subscriptions of source
// "streamr_network" receive through it what the client delivers,
// validated like overlay messages.
type streamrNetAdapter struct {
	client  *streamrnet.Client
	ocfg    overlay.Config // policy, limits, clock skew of the validation
	log     *slog.Logger
	dropped *prometheus.CounterVec
	full    prometheus.Counter
	inbox   chan snInbound
	stopped chan struct{} // closed when run returns

	mu    sync.Mutex
	parts map[streamr.StreamPartID]*snPart
}

// snInbound is a message a proxy delivered.
type snInbound struct {
	part string
	raw  []byte
}

type snPart struct {
	validator *overlay.Validator
	handles   int
	delivers  []snDeliver
}

type snDeliver struct {
	h       *snHandle
	deliver func(*streamr.StreamMessage, []byte)
}

func newStreamrNetAdapter(ocfg overlay.Config, queue int, reg prometheus.Registerer, log *slog.Logger) *streamrNetAdapter {
	a := &streamrNetAdapter{
		ocfg: ocfg, log: log.With("component", "streamr_network"), parts: make(map[streamr.StreamPartID]*snPart),
		inbox: make(chan snInbound, queue), stopped: make(chan struct{}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_streamr_network_dropped_total",
			Help: "Messages from the Streamr Network refused by validation, by reason (as tributary_overlay drops: size, decode, topic, publisher, signature, malformed, future).",
		}, []string{"reason"}),
		full: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_streamr_network_delivery_queue_full_total",
			Help: "Times a message from the Streamr Network waited because streamr_network.delivery_queue was full (the proxy's reads wait meanwhile).",
		}),
	}
	if reg != nil {
		reg.MustRegister(a.dropped, a.full)
	}
	return a
}

// enqueue takes what the client delivers, on a proxy's read loop, which
// must go on reading the node's answers: validation and delivery run in
// run. A consumer may take long — the first group key request makes a
// 4096-bit RSA key, seconds on a Pi — and the forwarder's publishes wait
// for answers on that read loop.
func (a *streamrNetAdapter) enqueue(streamPart string, raw []byte) {
	in := snInbound{streamPart, raw}
	select {
	case a.inbox <- in:
		return
	default:
	}
	a.full.Inc()
	select {
	case a.inbox <- in:
	case <-a.stopped:
	}
}

// run validates and delivers the queued messages until ctx ends.
func (a *streamrNetAdapter) run(ctx context.Context) error {
	defer close(a.stopped)
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-a.inbox:
			a.receive(in.part, in.raw)
		}
	}
}

// Join implements bridge.Overlay: with deliver, a subscribing proxy
// connection, else a publishing one.
func (a *streamrNetAdapter) Join(part streamr.StreamPartID, deliver func(*streamr.StreamMessage, []byte)) (bridge.Topic, error) {
	dir := streamrnet.Publish
	if deliver != nil {
		dir = streamrnet.Subscribe
	}
	return a.join(part, deliver, dir), nil
}

// joinKeyRequests joins part to publish, delivering the group key
// requests addressed to the gateway, which the nodes route to its
// publishing proxy connections too (a key responder, issue 18).
func (a *streamrNetAdapter) joinKeyRequests(part streamr.StreamPartID, deliver func(*streamr.StreamMessage, []byte)) *snHandle {
	return a.join(part, deliver, streamrnet.Publish)
}

func (a *streamrNetAdapter) join(part streamr.StreamPartID, deliver func(*streamr.StreamMessage, []byte), dir streamrnet.Direction) *snHandle {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.parts[part]
	if !ok {
		p = &snPart{validator: overlay.NewValidator(part, a.ocfg)}
		a.parts[part] = p
	}
	p.handles++
	h := &snHandle{a: a, part: part}
	if deliver != nil {
		p.delivers = append(slices.Clone(p.delivers), snDeliver{h, deliver})
	}
	a.client.Join(part.String(), dir)
	return h
}

// receive validates what the client delivers and passes it on.
func (a *streamrNetAdapter) receive(streamPart string, raw []byte) {
	part, err := streamr.ParseStreamPartID(streamPart)
	if err != nil {
		a.dropped.WithLabelValues("topic").Inc()
		return
	}
	a.mu.Lock()
	p := a.parts[part]
	var delivers []snDeliver
	if p != nil {
		delivers = p.delivers
	}
	a.mu.Unlock()
	if len(delivers) == 0 {
		return
	}
	m, reason, err := p.validator.Check(raw)
	if err != nil {
		a.dropped.WithLabelValues(reason).Inc()
		a.log.Debug("dropped a message from the Streamr Network", "stream_part", streamPart, "reason", reason, "err", err)
		return
	}
	for _, d := range delivers {
		d.deliver(m, raw)
	}
}

func (a *streamrNetAdapter) leave(h *snHandle) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.parts[h.part]
	if p == nil {
		return
	}
	p.delivers = slices.DeleteFunc(slices.Clone(p.delivers), func(d snDeliver) bool { return d.h == h })
	if p.handles--; p.handles > 0 {
		return
	}
	delete(a.parts, h.part)
	a.client.Leave(h.part.String())
}

// snHandle is one Join's share of a stream partition.
type snHandle struct {
	a    *streamrNetAdapter
	part streamr.StreamPartID
	once sync.Once
}

// Publish implements bridge.Topic.
func (h *snHandle) Publish(ctx context.Context, encoded [][]byte) (int, error) {
	return h.a.client.Publish(ctx, h.part.String(), encoded)
}

// Leave implements bridge.Topic.
func (h *snHandle) Leave() error {
	h.once.Do(func() { h.a.leave(h) })
	return nil
}
