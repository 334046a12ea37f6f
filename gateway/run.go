package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/systemd"
)

// maxStall is how long the signer may sit on waiting readings before the
// watchdog stops pinging and systemd restarts the service.
const maxStall = 30 * time.Second

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	// Before anything slow: SIGHUP's default action would end the process.
	hangup := make(chan os.Signal, 1)
	signal.Notify(hangup, syscall.SIGHUP)
	defer signal.Stop(hangup)
	fs := newFlags("run", stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults)")
	bootstrapNode := fs.Bool("bootstrap-node", false, "serve as a bootstrap node for other bridges: DHT on, and log the addresses they can use")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if err := cfg.checkFiles(*configPath); err != nil {
		return err
	}
	if *bootstrapNode {
		if !cfg.Overlay.Enabled {
			return usageError{errors.New("run: --bootstrap-node needs overlay.enabled = true")}
		}
		cfg.Overlay.DHT = true
		cfg.bootstrapNode = true
	}
	log, closeLog := newLogger(cfg.Log, stderr)
	defer closeLog()
	warnUnsyncedClock(log, cfg.Signing.OnUnsyncedClock)
	return logStopped(log, run(ctx, cfg, log, hangup))
}

// gateway is one running bridge: what run builds and tears down.
type gateway struct {
	cfg      *Config
	log      *slog.Logger
	reg      *prometheus.Registry
	key      hw.Key
	store    *storage.Store
	pipeline *bridge.Pipeline
	broker   *broker.Broker
	hangup   <-chan os.Signal // SIGHUP: reload users file and TLS certificates

	// Peer-to-peer side; nil when overlay.enabled is false.
	node      *overlay.Node
	forwarder *bridge.Forwarder
	adapter   *overlayAdapter
	subs      []*bridge.Subscription
	receipts  *bridge.Receipts
	delivery  *localDelivery // [[subscribe]] to local MQTT
	storer    *bridge.Storer // [[store]] rules; nil without them
	stored    []streamr.StreamPartID
}

// run serves cfg until ctx ends; each value on hangup (SIGHUP) reloads the broker's users
// file and TLS certificates.
func run(ctx context.Context, cfg *Config, log *slog.Logger, hangup <-chan os.Signal) error {
	if os.Getenv("GOMEMLIMIT") == "" && cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	}
	g, err := startGateway(ctx, cfg, log)
	for errors.Is(err, storage.ErrDiskFull) {
		// Running and refusing beats crash-looping until space is freed.
		if err = refuseUntilSpace(ctx, cfg, log, err); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil // stopped while refusing
		}
		g, err = startGateway(ctx, cfg, log)
	}
	if err != nil {
		return err
	}
	g.hangup = hangup
	err = g.serve(ctx)
	g.close()
	return err
}

func startGateway(ctx context.Context, cfg *Config, log *slog.Logger) (_ *gateway, err error) {
	g := &gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), bridge.NewClockCollector())
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if g.key, err = loadOrCreateKey(ctx, cfg, log); err != nil {
		return nil, err
	}
	rcfg := cfg.receiptConfig(g.key.PublisherID())
	rcfg.Logger = log.With("component", "receipts")
	if g.receipts, err = bridge.NewReceipts(rcfg); err != nil {
		return nil, err
	}
	sopts := storageOptions(cfg, log, g.reg)
	sopts.Guard = g.receipts
	if g.store, err = storage.Open(sopts); err != nil {
		return nil, err
	}
	rules, err := cfg.compileRules()
	if err != nil {
		return nil, err
	}
	if cfg.Overlay.Enabled {
		if err := g.startOverlay(); err != nil {
			return nil, err
		}
	}
	g.pipeline, err = bridge.New(bridge.Config{
		Committed:     g.notifyForwarder,
		Rules:         rules,
		Signer:        g.key,
		Log:           g.store,
		HoldUnsynced:  cfg.Signing.OnUnsyncedClock == "hold",
		LocalUnmapped: cfg.MQTT.Unmapped == "local",
		SignDelay:     signDelay(cfg.Signing.BatchWindow),
		PresignMax:    presignMax(cfg.Signing.SignInCommitUnder),
		Metrics:       bridge.NewMetrics(g.reg),
		Logger:        log,
	})
	if err != nil {
		return nil, err
	}
	bcfg := brokerConfig(cfg, g.reg)
	bcfg.Sessions = g.store
	if g.broker, err = broker.New(bcfg, ingestHandler{g.pipeline}, log); err != nil {
		return nil, err
	}
	if g.node != nil {
		g.delivery = newDelivery(g)
		if len(g.stored) > 0 {
			scfg := cfg.orderConfig("store", log, g.reg)
			scfg.Resender = g.node
			// A storer's receipts tell publishers what they may delete, so
			// it never gives a gap up: it keeps asking every resend_retry.
			scfg.MaxGapRequests = math.MaxInt32
			scfg.KeepGaps = true
			scfg.FromChainStart = true
			g.storer = bridge.NewStorer(g.store, scfg, log)
		}
	}
	return g, nil
}

// startOverlay starts the libp2p node; it listens from here on.
func (g *gateway) startOverlay() error {
	ocfg, err := g.cfg.overlayConfig(g.log, g.reg)
	if err != nil {
		return err
	}
	if g.subs, err = g.cfg.subscriptions(); err != nil {
		return err
	}
	if g.stored, err = g.cfg.storeParts(); err != nil {
		return err
	}
	// The gateway keeps what it receives for its subscriptions too (for storage.retention), so
	// that a consumer can resume from a position and `bridge export` has it.
	for _, s := range g.subs {
		for _, part := range s.Parts() {
			if !slices.Contains(g.stored, part) {
				g.stored = append(g.stored, part)
			}
		}
	}
	if g.node, err = overlay.New(ocfg); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	g.adapter = newOverlayAdapter(g.node)
	g.node.ServeResend(g.store) // own messages and [[store]] streams
	g.node.ServeReceipts(g.store)
	g.forwarder = bridge.NewForwarder(g.store, g.adapter, time.Duration(g.cfg.Overlay.Retry), g.reg, g.log)
	g.log.Info("overlay listening", "peer_id", g.node.ID(), "addrs", g.node.Addrs())
	if g.cfg.bootstrapNode {
		g.log.Info("bootstrap node: other bridges can join the overlay with", "bootstrap", g.node.Addrs())
	}
	return nil
}

func (g *gateway) notifyForwarder() {
	if g.forwarder != nil {
		g.forwarder.Notify()
	}
}

// serve runs every component until ctx is cancelled, then stops them in
// dependency order: the broker stops taking readings first, storage
// commits what was queued, the signer signs every pending reading, the
// forwarder sends what it can, and only then does the overlay close.
func (g *gateway) serve(ctx context.Context) error {
	work, failed := errgroup.WithContext(context.WithoutCancel(ctx))
	appendCtx, stopAppends := context.WithCancel(failed)
	signCtx, stopSigning := context.WithCancel(failed)
	netCtx, stopNet := context.WithCancel(failed)
	defer stopAppends()
	defer stopSigning()
	defer stopNet()
	st := stages{
		failed:   failed,
		appends:  stage{stopAppends, goDone(work, func() error { return g.store.Run(appendCtx) })},
		signing:  stage{stopSigning, goDone(work, func() error { return g.pipeline.Run(signCtx) })},
		stopRest: stopNet,
	}
	if g.node != nil {
		work.Go(func() error { return g.forwarder.Run(netCtx) })
		work.Go(func() error { return g.node.Run(netCtx) })
		g.delivery.run(netCtx, work)
		work.Go(func() error { return g.receipts.Run(netCtx, g.node, g.store.Parts) })
	}
	if g.storer != nil {
		work.Go(func() error { return g.storer.Orderer().Run(netCtx) })
		work.Go(func() error { return g.storer.Run(netCtx) })
	}

	front, frontCtx := errgroup.WithContext(ctx)
	front.Go(func() error { return g.broker.Run(frontCtx) })
	front.Go(func() error { return g.reloadOnHangup(frontCtx) })
	if g.cfg.HTTP.Address != "" {
		front.Go(func() error { return g.serveHTTP(frontCtx) })
	}
	front.Go(func() error { return g.announceReady(frontCtx, failed) })
	if g.cfg.Status.LEDPin != "" || g.cfg.Status.ButtonPin != "" {
		front.Go(func() error { return g.runStatus(frontCtx) })
	}

	frontErr := front.Wait()
	_ = systemd.Stopping()
	drainErr := g.drain(context.WithoutCancel(ctx), st)
	return errors.Join(frontErr, work.Wait(), drainErr)
}

// stage is a component that a stop ends on its own: stop cancels it and
// done closes once it has returned.
type stage struct {
	stop context.CancelFunc
	done <-chan struct{}
}

func (s stage) end() {
	s.stop()
	<-s.done
}

// stages are the lifetimes serve ends one after the other.
type stages struct {
	failed   context.Context // done when any component failed
	appends  stage           // the group committer of storage
	signing  stage           // the pipeline's signer
	stopRest func()          // the overlay side, the forwarder among it
}

// goDone runs fn in g and returns a channel closed when fn has returned.
func goDone(g *errgroup.Group, fn func() error) <-chan struct{} {
	done := make(chan struct{})
	g.Go(func() error {
		defer close(done)
		return fn()
	})
	return done
}

// drain is the graceful part of a stop, bounded by stop_timeout: storage
// commits the appends already queued, the signer signs every pending
// reading in chain order, and the forwarder gets the time left to send.
// It returns an *unsignedError if stored readings remain unsigned.
func (g *gateway) drain(ctx context.Context, st stages) error {
	defer st.stopRest()
	timeout := time.Duration(g.cfg.StopTimeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("stop_timeout (%s) reached", timeout))
	defer cancel()
	st.appends.end()
	st.signing.end()
	pending := g.store.PendingCount()
	g.log.Info("shutting down: broker stopped, signing pending readings", "pending", pending, "stop_timeout", timeout)
	start := time.Now()
	signed, err := g.pipeline.Drain(ctx)
	unsigned := g.store.PendingCount()
	g.log.Info("signer drained", "signed", signed, "unsigned", unsigned, "took", time.Since(start).Round(time.Millisecond))
	g.flushForwarder(ctx, st.failed)
	if unsigned == 0 {
		return nil
	}
	if err == nil {
		err = errors.New("readings were still pending after the signer found none")
	}
	return &unsignedError{count: unsigned, reason: err}
}

// flushForwarder gives the forwarder until ctx ends to send what the
// drain signed; what it cannot send stays in storage for the next start.
func (g *gateway) flushForwarder(ctx, failed context.Context) {
	if g.forwarder == nil {
		return
	}
	since := time.Now()
	g.forwarder.Notify()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !g.forwarder.SettledSince(since) {
		select {
		case <-ctx.Done():
			g.log.Warn("forwarding cut short; unsent messages stay in storage for the next start", "reason", context.Cause(ctx).Error())
			return
		case <-failed.Done():
			return
		case <-tick.C:
		}
	}
	if g.forwarder.HoldingBack() {
		g.log.Info("forwarder done; messages of stream partitions without peers stay in storage for the next start")
	}
}

// exitUnsigned is the exit status of a stop, or an export, that leaves
// stored readings unsigned.
const exitUnsigned = 3

// unsignedError reports stored readings left unsigned, and why.
type unsignedError struct {
	count  int64
	reason error
}

func (e *unsignedError) Error() string {
	return fmt.Sprintf("%d stored readings remain unsigned (%v); they are safe on disk and are signed at the next start", e.count, e.reason)
}

func (e *unsignedError) Unwrap() error { return e.reason }

// ExitCode is the process exit status for this error (see main).
func (e *unsignedError) ExitCode() int { return exitUnsigned }

// logStopped writes the last line of every run: that the gateway stopped,
// and why if it failed. main does not print the error again.
func logStopped(log *slog.Logger, err error) error {
	var unsigned *unsignedError
	switch {
	case errors.As(err, &unsigned):
		log.Error("gateway stopped with stored readings unsigned", "unsigned", unsigned.count,
			"reason", unsigned.reason.Error(), "exit_status", exitUnsigned)
	case err != nil:
		log.Error("gateway stopped", "err", err, "exit_status", exitCode(err))
	default:
		log.Info("gateway stopped", "exit_status", 0)
		return nil
	}
	return loggedError{err}
}

// announceReady tells systemd READY=1 once MQTT accepts connections, then
// drives the watchdog with the pipeline's health.
func (g *gateway) announceReady(ctx, failed context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-failed.Done():
		return errors.New("storage or signer stopped before the broker was ready")
	case <-g.broker.Ready():
	}
	if g.delivery != nil {
		if err := g.delivery.start(g.adapter); err != nil {
			return err
		}
	}
	if g.storer != nil {
		if err := g.storer.Start(g.adapter, g.stored); err != nil {
			return err
		}
	}
	g.log.Info("gateway ready", "publisher", hw.Describe(g.key), "mqtt", g.broker.Addrs())
	if err := systemd.Ready(); err != nil {
		g.log.Warn("sd_notify READY failed", "err", err)
	}
	health := func() error { return g.pipeline.Health(maxStall) }
	return systemd.RunWatchdog(ctx, health, g.log)
}

func (g *gateway) serveHTTP(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.HTTP.Address)
	if err != nil {
		return fmt.Errorf("http.address %s: %w", g.cfg.HTTP.Address, err)
	}
	hcfg := g.cfg.httpServerConfig(g.reg, g.log)
	hcfg.History, hcfg.Receipts = g.store, g.receipts
	hcfg.Health = func() error { return g.pipeline.Health(maxStall) }
	hcfg.Identity = func() any { return g.identity() }
	srv, err := bridge.NewHTTPServer(ln, hcfg)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("http.address %s: %w", g.cfg.HTTP.Address, err)
	}
	return srv.Serve(ctx)
}

func (g *gateway) close() {
	if g.node != nil {
		if err := g.node.Close(); err != nil {
			g.log.Error("close overlay", "err", err)
		}
	}
	if g.store != nil {
		if err := g.store.Close(); err != nil {
			g.log.Error("close storage", "err", err)
		}
	}
	if g.key != nil {
		_ = g.key.Close()
	}
}

// ingestHandler adapts the pipeline to the broker's Handler.
type ingestHandler struct{ p *bridge.Pipeline }

func (h ingestHandler) HandlePublish(_ context.Context, m *broker.Message) broker.Verdict {
	var props map[string]string
	if len(m.UserProperties) > 0 {
		props = make(map[string]string, len(m.UserProperties))
		for _, p := range m.UserProperties {
			props[p.Key] = p.Value
		}
	}
	wait, reason := h.p.Ingest(bridge.Publish{
		ClientID:       m.ClientID,
		Topic:          m.Topic,
		Payload:        m.Payload,
		QoS:            m.QoS,
		UserProperties: props,
	})
	if reason != nil {
		return broker.Verdict{Code: broker.ReasonCode(reason.Code), Detail: reason.Label + ": " + reason.Detail}
	}
	return broker.Verdict{Code: broker.Success, Wait: wait}
}

// signDelay maps batch_window onto bridge.Config.SignDelay, where zero
// means the default and a negative value none.
// presignMax maps sign_in_commit_under onto bridge.Config.PresignMax,
// where zero means the default and a negative value never.
func presignMax(under Duration) time.Duration {
	if under == 0 {
		return -1
	}
	return time.Duration(under)
}

func signDelay(window Duration) time.Duration {
	if window == 0 {
		return -1
	}
	return time.Duration(window)
}

func storageOptions(cfg *Config, log *slog.Logger, reg prometheus.Registerer) storage.Options {
	return storage.Options{
		Dir:            storageDir(cfg),
		QuotaBytes:     int64(cfg.Storage.Quota),
		Retention:      time.Duration(cfg.Storage.Retention),
		RetentionBytes: int64(cfg.Storage.RetentionBytes),
		GCInterval:     time.Duration(cfg.Storage.GCInterval),
		MinFreeBytes:   minFreeBytes(cfg),
		CommitWindow:   time.Duration(cfg.Storage.CommitWindow),
		Logger:         log,
		Registerer:     reg,
	}
}

func storageDir(cfg *Config) string { return cfg.StateDir + "/data" }

// minFreeBytes maps storage.min_free onto storage.Options, where 0 means
// the default and a negative value no check.
func minFreeBytes(cfg *Config) int64 {
	if cfg.Storage.MinFree == 0 {
		return -1
	}
	return int64(cfg.Storage.MinFree)
}

func brokerConfig(cfg *Config, reg prometheus.Registerer) broker.Config {
	m := cfg.MQTT
	bc := broker.Config{
		UsersFile:         m.UsersFile,
		AllowAnonymous:    m.AllowAnonymous,
		Registerer:        reg,
		MaxSessions:       orNone(m.MaxSessions),
		MaxConnsPerUser:   orNone(m.MaxConnectionsPerUser),
		MaxConnsPerSource: orNone(m.MaxConnectionsPerSource),
		MaxKeepAlive:      time.Duration(m.MaxKeepAlive),
		MaxTopicLength:    m.MaxTopicLength,
		MaxTopicLevels:    m.MaxTopicLevels,
		WriteTimeout:      time.Duration(m.WriteTimeout),
		MaxClientBuffer:   int(m.MaxClientBuffer),
		MaxConcurrentAuth: m.MaxConcurrentAuth,
		AuthBackoffMax:    time.Duration(m.AuthBackoffMax),
		LogRepeatInterval: time.Duration(m.LogRepeatInterval),
		SessionExpiry:     time.Duration(m.SessionExpiry),
		MaxInflight:       uint16(m.SessionMaxMessages),
		MaxSessionBytes:   int64(m.SessionMaxBytes),
		MaxQueuedBytes:    int64(m.MaxQueuedBytes),
	}
	if m.MaxQueuedBytes == 0 {
		bc.MaxQueuedBytes = -1 // "0 B" in the file: no limit
	}
	if m.MaxKeepAlive == 0 {
		bc.MaxKeepAlive = -1 // 0 in the file: no maximum
	}
	if m.AuthBackoffMax == 0 {
		bc.AuthBackoffMax = -1
	}
	for _, l := range cfg.MQTT.Listeners {
		bc.Listeners = append(bc.Listeners, broker.Listener{Type: l.Type, Address: l.Address, CertFile: l.CertFile, KeyFile: l.KeyFile})
	}
	return bc
}

// orNone maps a config limit where 0 means "no limit" onto broker.Config, where 0 means the
// default and a negative value none.
func orNone(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// keyOptions builds the key backend options from the config.
func keyOptions(cfg *Config, log *slog.Logger) hw.Options {
	return hw.Options{
		StateDir: cfg.StateDir,
		Passphrase: hw.PassphraseSource{
			File:       cfg.Key.PassphraseFile,
			Env:        cfg.Key.PassphraseEnv,
			Credential: cfg.Key.PassphraseCredential,
		},
		Logger: log,
	}
}

func keyURI(cfg *Config) string {
	if cfg.Key.URI != "" {
		return cfg.Key.URI
	}
	return hw.DefaultURI(cfg.StateDir)
}

// loadOrCreateKey opens the gateway key, generating a software key on
// first start when the config names no hardware key.
func loadOrCreateKey(ctx context.Context, cfg *Config, log *slog.Logger) (hw.Key, error) {
	key, err := openKey(ctx, cfg, log)
	if !errors.Is(err, hw.ErrNoKey) || cfg.Key.URI != "" {
		return key, err
	}
	uri := keyURI(cfg)
	if key, err = hw.Create(ctx, uri, keyOptions(cfg, log)); err != nil {
		return nil, fmt.Errorf("gateway key %s: %w", uri, err)
	}
	log.Info("generated gateway key", "uri", uri, "publisher", streamr.UserID(key.PublisherID()))
	return testKey(key), nil
}

// openKey opens the gateway key without creating one. In a build with
// the bridgetest tag, testKey may wrap it (see testkey.go).
func openKey(ctx context.Context, cfg *Config, log *slog.Logger) (hw.Key, error) {
	uri := keyURI(cfg)
	key, err := hw.Open(ctx, uri, keyOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("gateway key %s: %w", uri, err)
	}
	return testKey(key), nil
}

// newLogger logs to journald's native protocol when systemd connected
// stderr to the journal (so attributes become searchable fields, e.g.
// journalctl -u bridge COMPONENT=overlay), else text or JSON to w.
func newLogger(c LogConfig, w io.Writer) (*slog.Logger, func()) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by Config.validate
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: addrsAsText}
	if systemd.StderrIsJournal() {
		if h, err := systemd.NewJournalHandler(systemd.JournalSocket, opts); err == nil {
			return slog.New(h), func() { _ = h.Close() }
		}
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), func() {}
	}
	return slog.New(slog.NewTextHandler(w, opts)), func() {}
}
