package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tributary-iot/tributary/appapi"
	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/e2ee"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/registry"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamrnet"
)

// maxStall is how long the signer may sit on waiting readings before the
// watchdog stops pinging and systemd restarts the service.
const maxStall = 30 * time.Second

// Options are what a gateway takes besides its config.
type Options struct {
	// Logger receives the gateway's log; nil discards it.
	Logger *slog.Logger
	// Reload: each value received reloads the broker's users file and TLS
	// certificates (SIGHUP). Nil: no reloads.
	Reload <-chan os.Signal
	// BootstrapNode serves other gateways as their overlay bootstrap: the
	// DHT runs, and the addresses they can use are logged. It needs
	// overlay.enabled.
	BootstrapNode bool
	// Version is the binary's version, as the status page shows it.
	Version string
}

// Gateway is one Tributary gateway. New checks its config; Run opens the
// state directory, serves until its context ends and closes everything.
type Gateway struct {
	cfg   *Config
	opts  Options
	log   *slog.Logger
	ran   atomic.Bool
	ready chan struct{}

	mu  sync.Mutex
	sys *system // set once Run has started the parts

	// forwardLog, when set by a test, wraps the forwarder's storage.
	forwardLog func(bridge.ForwardLog) bridge.ForwardLog
	// streamrProxies, when set by a test, reports Streamr Network proxies
	// to the status page.
	streamrProxies func() []streamr.ProxyState
}

// New returns a gateway for cfg, which LoadConfig returned; it checks the
// config again and opens nothing.
func New(cfg *Config, opts Options) (*Gateway, error) {
	c := *cfg
	if opts.BootstrapNode {
		if !c.Overlay.Enabled {
			return nil, errors.New("bootstrap node: needs overlay.enabled = true")
		}
		c.Overlay.DHT = true
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gateway{cfg: &c, opts: opts, log: log, ready: make(chan struct{})}, nil
}

// Run serves until ctx ends or a part of the gateway fails, then stops
// every part in dependency order (see system.serve). It returns the
// errors of the parts that failed, and an *UnsignedError when stored
// readings remain unsigned; nil after a clean stop. While the disk is too full to open storage, Run refuses
// readings (see refuseUntilSpace) instead of failing. Run may be called
// once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.ran.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	warnUnsyncedClock(g.log, g.cfg.Signing.OnUnsyncedClock)
	s, err := g.start(ctx)
	for errors.Is(err, storage.ErrDiskFull) {
		// Running and refusing beats crash-looping until space is freed.
		if err = refuseUntilSpace(ctx, g.cfg, g.log, err); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil // stopped while refusing
		}
		s, err = g.start(ctx)
	}
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.sys = s
	g.mu.Unlock()
	err = s.serve(ctx, func() { close(g.ready) })
	s.close()
	return err
}

// Ready is closed once the gateway serves: MQTT accepts connections and
// every subscription and [[store]] rule has joined its overlay.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// MQTTAddrs are the bound addresses of the MQTT listeners; nil before
// Ready.
func (g *Gateway) MQTTAddrs() []net.Addr {
	if s := g.system(); s != nil {
		return s.broker.Addrs()
	}
	return nil
}

// HTTPAddr is the bound address of the HTTP API; nil until it listens.
func (g *Gateway) HTTPAddr() *net.TCPAddr {
	if s := g.system(); s != nil {
		return s.httpAddr.Load()
	}
	return nil
}

// WebSocketAddr is the bound address of the WebSocket interface; nil until
// it listens.
func (g *Gateway) WebSocketAddr() *net.TCPAddr {
	if s := g.system(); s != nil {
		return s.wsAddr.Load()
	}
	return nil
}

// Identity is the running gateway's identity (as GET /identity serves
// it); the zero Identity before Run has started.
func (g *Gateway) Identity() Identity {
	if s := g.system(); s != nil {
		return s.identity()
	}
	return Identity{}
}

func (g *Gateway) system() *system {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sys
}

// system is the parts of one start of a gateway: what start builds, serve
// runs and close tears down.
type system struct {
	cfg      *Config
	opts     Options
	log      *slog.Logger
	reg      *prometheus.Registry
	started  time.Time
	key      hw.Key
	store    *storage.Store
	pipeline *bridge.Pipeline
	broker   *broker.Broker

	// Peer-to-peer side; nil when overlay.enabled is false.
	node      *overlay.Node
	fills     *bridge.FillShare // the orderers' gap fills, fetched once for all of them
	forwarder *bridge.Forwarder
	adapter   *overlayAdapter
	subs      []*bridge.Subscription
	receipts  *bridge.Receipts
	delivery  *localDelivery // [[subscribe]] to local MQTT
	storer    *bridge.Storer // [[store]] rules; nil without them
	stored    []streamr.StreamPartID

	// App interfaces (HTTP publish, WebSocket).
	apiKeys    appapi.Keys
	appMetrics *appapi.Metrics

	httpAddr, wsAddr atomic.Pointer[net.TCPAddr] // bound addresses once listening
	wsServer         atomic.Pointer[appapi.WSServer]

	// End-to-end encryption; nil when no rule encrypts and nothing is
	// subscribed to.
	e2ee           *e2ee.Exchange
	secrets        *e2ee.SealedSecrets       // the store's secrets, sealed under the data key; nil without e2ee
	encryptedParts chan streamr.StreamPartID // to runKeyResponder
	keyServed      []streamr.StreamPartID    // [[store]] answer_key_requests
	collect        chan *streamr.StreamMessage
	keyServerDone  chan struct{} // closed when runKeyResponder returns
	keyTopics      *keyTopics    // where e2ee publishes, per partition

	// Streamr Network side ([streamr_network]); nil when unused.
	sn          *streamrnet.Client
	snAdapter   *streamrNetAdapter
	snForwarder *bridge.Forwarder // streamr_network.publish
	snSubs      []*bridge.Subscription
	snKeys      *kxSender // key exchange messages into the Streamr Network

	registry *registry.Client // [registry]; nil when off
	// streamrProxies reports the Streamr Network proxies for the status
	// page; nil without [streamr_network].
	streamrProxies func() []streamr.ProxyState
}

func (g *Gateway) start(ctx context.Context) (_ *system, err error) {
	cfg, log := g.cfg, g.log
	s := &system{cfg: cfg, opts: g.opts, log: log, reg: prometheus.NewRegistry(), started: time.Now(), streamrProxies: g.streamrProxies}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), bridge.NewClockCollector())
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if s.key, err = loadOrCreateKey(ctx, cfg, log); err != nil {
		return nil, err
	}
	if s.registry, err = cfg.dialRegistry(ctx, log, s.reg); err != nil {
		return nil, err
	}
	if err := cfg.resolvePartitions(ctx, s.registry, log); err != nil {
		return nil, err
	}
	rcfg := cfg.receiptConfig(s.key.PublisherID())
	rcfg.Logger = log.With("component", "receipts")
	if s.receipts, err = bridge.NewReceipts(rcfg); err != nil {
		return nil, err
	}
	sopts := storageOptions(cfg, log, s.reg)
	sopts.Guard = s.receipts
	if s.store, err = storage.Open(sopts); err != nil {
		return nil, err
	}
	if cfg.Overlay.Enabled {
		if err := s.startOverlay(g.forwardLog); err != nil {
			return nil, err
		}
	}
	if s.apiKeys, err = cfg.apiKeys(); err != nil {
		return nil, err
	}
	s.appMetrics = appapi.NewMetrics(s.reg)
	if cfg.streamrNetworkUsed() {
		if s.snSubs, err = cfg.subscriptions(sourceStreamrNetwork); err != nil {
			return nil, err
		}
		if err := s.startStreamrNetwork(s.forwardLog(g.forwardLog)); err != nil {
			return nil, err
		}
	}
	if cfg.needsE2EE() {
		if s.secrets, err = sealedSecrets(ctx, cfg, s.key, s.store, log); err != nil {
			return nil, err
		}
	}
	if err := s.startPipeline(); err != nil {
		return nil, err
	}
	if s.node != nil || s.sn != nil {
		s.delivery = newDelivery(s)
	}
	if s.node != nil {
		s.storer = s.newStorer()
	}
	return s, nil
}

// startPipeline builds the signing pipeline and the broker in front of it.
func (s *system) startPipeline() error {
	cfg := s.cfg
	rules, err := cfg.compileRules()
	if err != nil {
		return err
	}
	if err := s.startE2EE(rules); err != nil {
		return err
	}
	pcfg := bridge.Config{
		Committed:     s.notifyForwarder,
		Rules:         rules,
		Signer:        s.key,
		Log:           s.store,
		HoldUnsynced:  cfg.Signing.OnUnsyncedClock == "hold",
		LocalUnmapped: cfg.MQTT.Unmapped == "local",
		SignDelay:     signDelay(cfg.Signing.BatchWindow),
		PresignMax:    presignMax(cfg.Signing.SignInCommitUnder),
		Metrics:       bridge.NewMetrics(s.reg),
		Logger:        s.log,
	}
	if s.e2ee != nil {
		pcfg.Encryptor, pcfg.EncryptedPart = s.e2ee, s.noteEncryptedPart
	}
	if s.pipeline, err = bridge.New(pcfg); err != nil {
		return err
	}
	bcfg := brokerConfig(cfg, s.reg)
	bcfg.Sessions = s.store
	h := ingestHandler{p: s.pipeline}
	if cfg.MQTT.StreamrNode {
		if bcfg.APIKeys, h.node, err = s.nodeMQTT(); err != nil {
			return err
		}
	}
	if s.broker, err = broker.New(bcfg, h, s.log); err != nil {
		return err
	}
	return nil
}

// newStorer is the storage node role of the [[store]] rules (and of the
// subscriptions' partitions); nil without any.
func (s *system) newStorer() *bridge.Storer {
	if len(s.stored) == 0 {
		return nil
	}
	scfg := s.cfg.orderConfig("store", s.log, s.reg)
	scfg.Resender = s.fills
	s.fills.Share(s.stored...)
	if s.node != nil {
		scfg.LastLoss = s.node.LastLoss
	}
	// A storer's receipts tell publishers what they may delete, so
	// it never gives a gap up: it keeps asking every resend_retry.
	scfg.MaxGapRequests = math.MaxInt32
	scfg.KeepGaps = true
	scfg.FromChainStart = true
	return bridge.NewStorer(s.keyCollecting(notifyingLog{s.store, s.notifyApps}), scfg, s.log)
}

// startOverlay starts the libp2p node; it listens from here on.
func (s *system) startOverlay(wrapLog func(bridge.ForwardLog) bridge.ForwardLog) error {
	ocfg, err := s.cfg.overlayConfig(s.log, s.reg)
	if err != nil {
		return err
	}
	if s.subs, err = s.cfg.subscriptions(sourceOverlay); err != nil {
		return err
	}
	if s.stored, err = s.cfg.storeParts(); err != nil {
		return err
	}
	// The gateway keeps what it receives for its subscriptions too (for storage.retention), so
	// that a consumer can resume from a position and `bridge export` has it.
	for _, sub := range s.subs {
		for _, part := range sub.Parts() {
			if !slices.Contains(s.stored, part) {
				s.stored = append(s.stored, part)
			}
		}
	}
	fcfg := s.cfg.forwardConfig(s.log, s.reg)
	if s.registry != nil {
		ocfg.Policy = registryPolicy{s.registry}
		fcfg.Permissions, fcfg.Publisher = s.registry, s.key.PublisherID()
	}
	if s.node, err = overlay.New(ocfg); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	s.adapter = newOverlayAdapter(s.node)
	s.fills = bridge.NewFillShare(s.node, bridge.FillShareConfig{MaxBytes: s.cfg.Overlay.FillShareBytes, Registerer: s.reg, Logger: s.log})
	s.node.ServeResend(s.store) // own messages and [[store]] streams
	s.node.ServeReceipts(s.store)
	s.forwarder = bridge.NewForwarder(s.forwardLog(wrapLog), s.adapter, fcfg)
	s.log.Info("overlay listening", "peer_id", s.node.ID(), "addrs", s.node.Addrs())
	if s.opts.BootstrapNode {
		s.log.Info("bootstrap node: other bridges can join the overlay with", "bootstrap", s.node.Addrs())
	}
	return nil
}

// forwardLog is the storage the forwarders read, wrapped by a test's wrapLog.
func (s *system) forwardLog(wrapLog func(bridge.ForwardLog) bridge.ForwardLog) bridge.ForwardLog {
	if wrapLog != nil {
		return wrapLog(s.store)
	}
	return s.store
}

func (s *system) notifyForwarder() {
	for _, f := range s.forwarders() {
		f.Notify()
	}
	s.notifyApps()
}

// forwarders are the overlay's and the Streamr Network's, those that run.
func (s *system) forwarders() []*bridge.Forwarder {
	var out []*bridge.Forwarder
	for _, f := range []*bridge.Forwarder{s.forwarder, s.snForwarder} {
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

func (s *system) close() {
	if s.registry != nil {
		s.registry.Close()
	}
	if s.e2ee != nil {
		s.e2ee.Close() // messages still waiting for keys are fetched again after a restart
	}
	if s.node != nil {
		if err := s.node.Close(); err != nil {
			s.log.Error("close overlay", "err", err)
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Error("close storage", "err", err)
		}
	}
	if s.key != nil {
		_ = s.key.Close()
	}
}

// ingestHandler adapts the pipeline to the broker's Handler.
type ingestHandler struct {
	p    *bridge.Pipeline
	node *appapi.NodeTopics // mqtt.streamr_node: topics that are stream IDs
}

func (h ingestHandler) HandlePublish(ctx context.Context, m *broker.Message) broker.Verdict {
	if h.node != nil {
		if v, ok := h.nodePublish(m); ok {
			return v
		}
	}
	var props map[string]string
	if len(m.UserProperties) > 0 {
		props = make(map[string]string, len(m.UserProperties))
		for _, p := range m.UserProperties {
			props[p.Key] = p.Value
		}
	}
	return verdict(h.p.Ingest(bridge.Publish{
		ClientID:       m.ClientID,
		Topic:          m.Topic,
		Payload:        m.Payload,
		QoS:            m.QoS,
		UserProperties: props,
	}))
}

func verdict(wait func(context.Context) error, reason *bridge.Reason) broker.Verdict {
	if reason != nil {
		return broker.Verdict{Code: broker.ReasonCode(reason.Code), Detail: reason.Label + ": " + reason.Detail}
	}
	return broker.Verdict{Code: broker.Success, Wait: wait}
}

// warnUnsyncedClock warns at start when the kernel says the clock is not
// NTP-synchronised: readings are timestamped (and, with "sign", signed)
// with that clock.
func warnUnsyncedClock(log *slog.Logger, policy string) {
	sync, err := bridge.ReadClockSync()
	switch {
	case err != nil:
		log.Warn("cannot read the clock's sync state", "err", err)
	case !sync.Synced && policy == "hold":
		log.Warn("system clock is not synchronised: signing waits until it is (signing.on_unsynced_clock = \"hold\")", "max_error", sync.MaxError.String())
	case !sync.Synced:
		log.Warn("system clock is not synchronised: readings are signed with its time (signing.on_unsynced_clock = \"sign\")", "max_error", sync.MaxError.String())
	}
}
