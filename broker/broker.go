// Package broker runs the gateway's embedded MQTT broker (mochi-mqtt v2). It hands every
// PUBLISH from a sensor to a Handler and acknowledges it only once the Handler accepted it and
// it is durable, so that a PUBACK means the reading will not be lost. QoS 1 PUBLISHes of one
// client are pipelined: the broker reads the next ones while earlier ones wait for storage, and
// acknowledges them in order (see Handler). It also authenticates clients against a TOML users
// file with per-user topic ACLs, and lets the bridge publish to local subscribers.
//
// Clients authenticate against a users file (Config.UsersFile), TOML with one [[user]] table
// per account; unknown keys are errors:
//
//	[[user]]
//	name = "sensor-1"
//	password_hash = "$2a$10$..."      # bcrypt, see HashPassword
//	publish = ["sensors/%u/#"]        # MQTT filters; %u = user name, %c = client id
//	subscribe = ["alerts/#"]
//
// A publish outside the user's filters is refused with reason NotAuthorized before the Handler
// sees it; a subscription outside them gets a failure SUBACK (a shared subscription
// "$share/<group>/<filter>" is checked by its filter). A Will topic must be inside the user's
// publish filters (else CONNACK NotAuthorized), and a published Will goes to the Handler like
// any PUBLISH. A session belongs to the user who created it: another user's CONNECT with its
// client ID is refused (ClientIdentifierNotValid).
//
// %c isolates devices only with one account per device: the client ID is chosen by the client,
// so a user sharing one account across devices can pick any of them (or any other value) and
// reach that namespace. %u is what separates accounts.
//
// Beyond that it serves TCP, WebSocket and TLS listeners; keeps persistent sessions (clients,
// subscriptions, queued and retained messages) in a SessionStore, so they survive a restart
// (persist*.go); bounds what clients can make it hold (connections, auth attempts, topics,
// packets, queued bytes: admission.go, limits.go), counting what it refuses; and rereads the
// users file and certificates on Reload.
//
// This is the only package that imports mochi; nothing of mochi appears in its API.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults sized for a Raspberry Pi serving tens to hundreds of sensors.
const (
	DefaultMaxClients    = 256
	DefaultMaxPacketSize = 256 << 10 // bytes; sensor readings are small, Streamr messages stay well below
	// DefaultReceiveMaximum bounds the QoS 1 PUBLISHes of one client awaiting durability (the
	// broker stops reading from a client that has this many) and the QoS 2 ones awaiting PUBREL
	// (mochi disconnects a client exceeding it). MQTT 3.1.1 clients cannot learn it, so it is
	// generous.
	DefaultReceiveMaximum    = 256
	DefaultMaxInflight       = 1024      // QoS>0 messages held per session, queued or awaiting its ack
	DefaultMaxSessionBytes   = 4 << 20   // topic+payload bytes held per session, queued or awaiting its ack
	DefaultMaxQueuedBytes    = 16 << 20  // bytes held by all sessions together (see Config.MaxQueuedBytes)
	DefaultMaxQueuedMessages = 1024      // per-client outbound queue; mochi allocates it per client (8 KiB here)
	DefaultSessionExpiry     = time.Hour // how long a disconnected persistent session is kept
	DefaultConnectTimeout    = 10 * time.Second
)

// topicAliasMaximum is the number of topic aliases a client may set up (mochi's default, 65535,
// lets each client grow an alias table of that many topics).
const topicAliasMaximum = 16

// sysTopicInterval is how often mochi refreshes $SYS topics. Each refresh calls
// runtime.ReadMemStats (a stop-the-world pause) and rewrites 20 retained messages; the broker
// refuses $SYS subscriptions anyway (see hook.OnACLCheck), so refresh once a day only.
const sysTopicInterval = 24 * 60 * 60

// Listener is one network endpoint of the broker.
type Listener struct {
	Type     string // "tcp", "tls", "ws" (MQTT over WebSocket) or "wss"
	Address  string // host:port, e.g. "127.0.0.1:1883"; port 0 picks a free port (see Broker.Addrs)
	CertFile string // PEM certificate chain; required for tls and wss, refused otherwise
	KeyFile  string // PEM private key; required for tls and wss, refused otherwise
}

// Config configures a Broker. The zero value of each limit selects its Default* constant.
type Config struct {
	Listeners []Listener // at least one

	// UsersFile is the TOML users file (format in the package doc); "" disables authentication,
	// which New allows only on loopback listeners unless AllowAnonymous is set.
	UsersFile string
	// AllowAnonymous explicitly allows listeners on non-loopback addresses without a users file.
	AllowAnonymous bool
	// APIKeys, without a users file, authenticate clients as the Streamr node's MQTT plugin
	// does: the password must be one of them (the user name is ignored); a wrong one is
	// refused with "bad user name or password" (3.1.1: 4), none with "not authorized" (5).
	// Listeners beyond loopback are then allowed.
	APIKeys []string

	MaxClients      int    // concurrent clients; default DefaultMaxClients
	MaxPacketSize   uint32 // bytes, larger packets disconnect the client; default DefaultMaxPacketSize
	ReceiveMaximum  uint16 // default DefaultReceiveMaximum
	MaxInflight     uint16 // per session; default DefaultMaxInflight; at most 65534
	MaxSessionBytes int64  // per session; default DefaultMaxSessionBytes
	// MaxQueuedBytes bounds what all sessions hold together: topic and payload plus 1.5 KiB per
	// message for the broker's copy. Beyond it the oldest queued message of any session is
	// dropped. Default DefaultMaxQueuedBytes; negative: no limit.
	MaxQueuedBytes    int64
	MaxQueuedMessages int           // default DefaultMaxQueuedMessages
	SessionExpiry     time.Duration // default DefaultSessionExpiry; at most ~136 years
	ConnectTimeout    time.Duration // TLS handshake plus CONNECT; default DefaultConnectTimeout
	// WriteTimeout and MaxClientBuffer bound a client that does not read what it is sent: it
	// is disconnected when a write makes no progress for WriteTimeout or more than
	// MaxClientBuffer bytes pile up for it, so that it never holds up publishers. Defaults
	// DefaultWriteTimeout and DefaultMaxClientBuffer.
	WriteTimeout    time.Duration
	MaxClientBuffer int
	// MaxTopicLength and MaxTopicLevels bound topic names and filters; beyond them a PUBLISH
	// is refused with TopicNameInvalid and a subscription with TopicFilterInvalid. Defaults
	// DefaultMaxTopicLength and DefaultMaxTopicLevels.
	MaxTopicLength int
	MaxTopicLevels int
	// MaxConnsPerUser and MaxConnsPerSource bound the connections of one user name and of one
	// source IP address (counted from accept, before CONNECT); MaxKeepAlive is the longest
	// keep-alive granted (see DefaultMaxKeepAlive). Zero selects the default, negative disables a limit.
	MaxConnsPerUser   int
	MaxConnsPerSource int
	MaxKeepAlive      time.Duration
	// MaxConcurrentAuth bounds concurrent bcrypt checks; AuthBackoffMax caps the backoff of a
	// source address or user name after failed passwords (negative: no backoff).
	MaxConcurrentAuth int
	AuthBackoffMax    time.Duration
	// MaxSessions bounds the sessions held (connected or stored); beyond it a CONNECT that
	// would create a new persistent session is refused (MQTT 5: 0x97, 3.1.1: 0x03). Default
	// DefaultMaxSessions; negative: no limit.
	MaxSessions int

	// LogRepeatInterval is how often a log line that clients can cause at will (a refused
	// publish, a bad password, a limit hit) is written at most per kind; the next one carries
	// the number suppressed. Default DefaultLogRepeatInterval.
	LogRepeatInterval time.Duration

	// Sessions keeps persistent sessions across restarts (see sessions in persist.go); nil keeps
	// them in memory only.
	Sessions SessionStore

	// MochiLogLevel is the minimum level of mochi's internal log lines; default slog.LevelWarn
	// (mochi logs routine events at Info).
	MochiLogLevel slog.Leveler
	// Registerer receives the broker's Prometheus metrics (tributary_broker_*); nil registers none.
	Registerer prometheus.Registerer
}

// Errors returned by Broker methods.
var (
	ErrRunTwice   = errors.New("broker: Run called more than once")
	ErrNotRunning = errors.New("broker: not running")
)

// Broker is an embedded MQTT broker. Create it with New, then call Run.
type Broker struct {
	log       *slog.Logger
	srv       *mqtt.Server
	hook      *hook
	sessions  *sessions
	local     *mqtt.Client // inline client for Publish; bypasses ACLs and the Handler
	listeners []*listener
	stats     counters

	ran     atomic.Bool
	running atomic.Bool
	ready   chan struct{}
	fatal   chan error
}

// New validates cfg, loads the users file and TLS certificates, and prepares the broker.
// It binds no socket; Run does. It logs to log (nil discards) as component "mqtt".
func New(cfg Config, h Handler, log *slog.Logger) (*Broker, error) {
	if h == nil {
		return nil, errors.New("broker: nil Handler")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mqttLog := log.With("component", "mqtt") // mochi and the sessions hook tag log with their own
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var accts *accounts
	if cfg.UsersFile != "" {
		us, err := loadUsers(cfg.UsersFile)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		accts = newAccounts(cfg.UsersFile, us)
	}

	b := &Broker{
		log:   mqttLog,
		ready: make(chan struct{}),
		fatal: make(chan error, len(cfg.Listeners)),
	}
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: cfg.capabilities(),
		Logger: slog.New(mochiHandler{log.With("component", "mochi").Handler(), cfg.MochiLogLevel,
			newRateLog(mqttLog, cfg.LogRepeatInterval)}),
		SysTopicResendInterval: sysTopicInterval,
	})
	b.hook = &hook{
		handler: h, accounts: accts, log: mqttLog, rlog: newRateLog(mqttLog, cfg.LogRepeatInterval), stats: &b.stats,
		srv: b.srv, receiveMaximum: int(cfg.ReceiveMaximum),
		limits:       topicLimits{maxLength: cfg.MaxTopicLength, maxLevels: cfg.MaxTopicLevels},
		auth:         newAuthGate(max(cfg.MaxConcurrentAuth, 1), max(cfg.AuthBackoffMax, authBackoffBase)),
		maxKeepAlive: max(cfg.MaxKeepAlive, 0), maxConnsPerUser: cfg.MaxConnsPerUser, maxSessions: cfg.MaxSessions,
		maxPacketSize: cfg.MaxPacketSize, topicAliasMaximum: topicAliasMaximum,
		apiKeys: newAPIKeys(cfg.APIKeys),
	}
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	sessionLog := log.With("component", "mqtt-sessions")
	b.sessions = newSessions(b.srv, cfg.Sessions,
		sessionLimits{maxMessages: int(cfg.MaxInflight), maxBytes: cfg.MaxSessionBytes, maxTotal: cfg.MaxQueuedBytes},
		sessionLog, newRateLog(sessionLog, cfg.LogRepeatInterval))
	if err := b.srv.AddHook(b.sessions, nil); err != nil {
		return nil, fmt.Errorf("broker: add sessions hook: %w", err)
	}
	b.local = b.srv.NewClient(nil, mqtt.LocalListener, "tributary-local", true)

	for i, lc := range cfg.Listeners {
		cert, err := lc.certificate()
		if err != nil {
			return nil, fmt.Errorf("broker: listeners[%d] (%s %s): %w", i, lc.Type, lc.Address, err)
		}
		id := fmt.Sprintf("%s-%d", lc.Type, i)
		writes := writeLimits{timeout: cfg.WriteTimeout, maxBuffer: cfg.MaxClientBuffer, onSlow: b.slowClient,
			maxPerSource: cfg.MaxConnsPerSource, onSourceFull: b.sourceFull}
		b.listeners = append(b.listeners, newListener(id, lc, cert, cfg.ConnectTimeout, writes, listenerCalls{
			fail: b.reportFatal, connDone: b.sessions.gates.release, closeClients: b.closeListenerClients}))
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(newCollector(b.Stats)); err != nil {
			return nil, fmt.Errorf("broker: register metrics: %w", err)
		}
		if err := cfg.Registerer.Register(newSessionCollector(b.SessionStats)); err != nil {
			return nil, fmt.Errorf("broker: register session metrics: %w", err)
		}
	}
	return b, nil
}

func (c *Config) setDefaults() {
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = DefaultReceiveMaximum
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxSessionBytes == 0 {
		c.MaxSessionBytes = DefaultMaxSessionBytes
	}
	setDefault(&c.MaxQueuedBytes, DefaultMaxQueuedBytes)
	if c.MaxQueuedMessages == 0 {
		c.MaxQueuedMessages = DefaultMaxQueuedMessages
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	setDefault(&c.MaxConnsPerUser, DefaultMaxConnsPerUser)
	setDefault(&c.MaxConnsPerSource, DefaultMaxConnsPerSource)
	setDefault(&c.MaxKeepAlive, DefaultMaxKeepAlive)
	setDefault(&c.MaxConcurrentAuth, DefaultMaxConcurrentAuth)
	setDefault(&c.MaxSessions, DefaultMaxSessions)
	setDefault(&c.AuthBackoffMax, DefaultAuthBackoffMax)
	setDefault(&c.MaxTopicLength, DefaultMaxTopicLength)
	setDefault(&c.MaxTopicLevels, DefaultMaxTopicLevels)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.MaxClientBuffer, DefaultMaxClientBuffer)
	setDefault(&c.LogRepeatInterval, DefaultLogRepeatInterval)
	if c.MochiLogLevel == nil {
		c.MochiLogLevel = slog.LevelWarn
	}
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (c *Config) validate() error {
	switch {
	case len(c.Listeners) == 0:
		return errors.New("broker: no listeners configured")
	case c.MaxClients < 0:
		return fmt.Errorf("broker: max clients %d is negative", c.MaxClients)
	case c.MaxInflight == math.MaxUint16:
		return fmt.Errorf("broker: max inflight %d out of range 1..%d", c.MaxInflight, math.MaxUint16-1)
	case c.MaxSessionBytes < 0:
		return fmt.Errorf("broker: max session bytes %d is negative", c.MaxSessionBytes)
	case c.MaxQueuedMessages < 0 || c.MaxQueuedMessages > math.MaxInt32:
		return fmt.Errorf("broker: max queued messages %d out of range 1..%d", c.MaxQueuedMessages, math.MaxInt32)
	case c.SessionExpiry < time.Second || c.SessionExpiry/time.Second > math.MaxUint32:
		return fmt.Errorf("broker: session expiry %s out of range 1s..%ds", c.SessionExpiry, uint32(math.MaxUint32))
	case c.ConnectTimeout < 0:
		return fmt.Errorf("broker: connect timeout %s is negative", c.ConnectTimeout)
	case c.WriteTimeout < 0:
		return fmt.Errorf("broker: write timeout %s is negative", c.WriteTimeout)
	case c.MaxTopicLength < 0 || c.MaxTopicLevels < 0:
		return fmt.Errorf("broker: topic limits %d bytes, %d levels: negative", c.MaxTopicLength, c.MaxTopicLevels)
	case c.MaxConcurrentAuth < 0:
		return fmt.Errorf("broker: max concurrent auth %d is negative", c.MaxConcurrentAuth)
	case c.MaxKeepAlive > math.MaxUint16*time.Second:
		return fmt.Errorf("broker: max keep-alive %s above %ds", c.MaxKeepAlive, math.MaxUint16)
	case c.MaxClientBuffer < 0:
		return fmt.Errorf("broker: max client buffer %d is negative", c.MaxClientBuffer)
	}
	for i, l := range c.Listeners {
		if err := l.validate(c.UsersFile != "" || c.AllowAnonymous || len(c.APIKeys) > 0); err != nil {
			return fmt.Errorf("broker: listeners[%d] (%s %s): %w", i, l.Type, l.Address, err)
		}
	}
	return nil
}

// validate checks one listener. openOK is true when a non-loopback address is acceptable:
// with a users file, or with an explicit AllowAnonymous.
func (l Listener) validate(openOK bool) error {
	switch l.Type {
	case "tcp", "ws":
		if l.CertFile != "" || l.KeyFile != "" {
			return fmt.Errorf("cert_file/key_file given for a %s listener; use tls or wss", l.Type)
		}
	case "tls", "wss":
		if l.CertFile == "" || l.KeyFile == "" {
			return fmt.Errorf("%s listener needs both cert_file and key_file", l.Type)
		}
	default:
		return fmt.Errorf("unknown listener type %q (want tcp, tls, ws or wss)", l.Type)
	}
	host, port, err := net.SplitHostPort(l.Address)
	if err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("address: port %q is not a number 0-65535", port)
	}
	if !openOK && !isLoopbackHost(host) {
		return errors.New("refusing a non-loopback address without a users file; " +
			"configure a users file, bind to 127.0.0.1, or set allow_anonymous explicitly")
	}
	return nil
}

// isLoopbackHost reports whether host ("" means all interfaces) names only the loopback interface.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// certificate loads the listener's TLS certificate; nil for tcp and ws.
func (l Listener) certificate() (*certificate, error) {
	if l.CertFile == "" {
		return nil, nil
	}
	for _, f := range []string{l.CertFile, l.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	return loadCertificate(l.CertFile, l.KeyFile)
}

// capabilities translates the config into mochi's limits.
func (c *Config) capabilities() *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(c.MaxClients)
	caps.MaximumPacketSize = c.MaxPacketSize
	caps.ReceiveMaximum = c.ReceiveMaximum
	// One above the session limit, which the sessions hook enforces first by dropping the
	// oldest message; mochi's own check would drop the newest.
	caps.MaximumInflight = c.MaxInflight + 1
	// Room for every QoS>0 message a session may hold, so that mochi drops none of them for a
	// full outbound queue (server.go:1100) while they are held back (see sessions).
	caps.MaximumClientWritesPending = int32(max(c.MaxQueuedMessages, int(c.MaxInflight)+1))
	caps.MaximumSessionExpiryInterval = uint32(c.SessionExpiry / time.Second)
	caps.TopicAliasMaximum = topicAliasMaximum
	// Message.ProtocolVersion promises 4 or 5; MQTT 3.1 (3) clients are refused at CONNECT.
	caps.MinimumProtocolVersion = 4
	// mochi's acks echo the PUBLISH's user properties by default, which the spec does not ask
	// for and which Paho's clients fail to parse in a PUBREC; it only costs sensors bandwidth.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	return caps
}

// Run binds the listeners, serves until ctx is cancelled, then shuts down: it disconnects the
// clients, waits for their goroutines and returns nil. It returns an error if a listener cannot
// bind or fails while serving. Run may be called once.
func (b *Broker) Run(ctx context.Context) error {
	if !b.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.hook.ctx = hctx // read only by client goroutines, all started after srv.Serve below
	b.sessions.ctx = hctx
	stopCommit := make(chan struct{})
	go b.sessions.commit.run(stopCommit)
	defer func() { close(stopCommit); <-b.sessions.commit.done }() // after stop: records of the disconnects

	if err := b.bind(); err != nil {
		return err
	}
	if err := b.srv.Serve(); err != nil { // only fails for config-file listeners/hooks and stores, unused here
		for _, l := range b.listeners {
			l.Close(nil)
		}
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.running.Store(true)
	close(b.ready)
	for _, l := range b.listeners {
		b.log.Info("mqtt listener ready", "type", l.kind, "address", l.Address())
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-b.fatal:
	}
	return b.stop(cancel, err)
}

// bind attaches every listener to mochi (which calls listener.Init); on failure it closes the
// ones already bound.
func (b *Broker) bind() error {
	for i, l := range b.listeners {
		if err := b.srv.AddListener(l); err != nil {
			for _, bound := range b.listeners[:i] {
				bound.Close(nil)
			}
			return fmt.Errorf("broker: %w", err)
		}
	}
	return nil
}

// stop cancels Handlers and Waits, closes mochi once (a second mochi Close panics,
// server.go:1497) and waits for the listener, client and ackQueue goroutines.
func (b *Broker) stop(cancel context.CancelFunc, err error) error {
	b.running.Store(false)
	cancel()          // first: stops ackQueues, which unblocks read goroutines waiting for a slot
	_ = b.srv.Close() // always nil; waits for the client goroutines (listeners.go:134)
	for _, l := range b.listeners {
		<-l.served
	}
	b.hook.workers.Wait()
	b.sessions.late.Wait()
	b.log.Info("mqtt broker stopped")
	return err
}

// closeListenerClients disconnects the clients of one listener as mochi's unexported
// Server.closeListenerClients does, but lists them with Clients.GetAll, which takes the
// clients' lock once (see listener.Close for why).
func (b *Broker) closeListenerClients(listenerID string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == listenerID && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// slowClient counts and logs a client disconnected for not reading what it is sent.
func (b *Broker) slowClient(remote, reason string) {
	b.stats.refused[refuseSlowClient].Add(1)
	b.hook.rlog.Warn("slow client", "disconnecting a client that does not read what it is sent",
		"remote", remote, "reason", reason)
}

// sourceFull counts and logs a connection refused at accept: its source address has the
// maximum number of connections.
func (b *Broker) sourceFull(remote string, limit int) {
	b.stats.refused[refuseSourceConns].Add(1)
	b.hook.rlog.Warn("source connections", "connection refused: the source address has the maximum number of connections",
		"remote", remote, "limit", limit)
}

func (b *Broker) reportFatal(err error) {
	select {
	case b.fatal <- err:
	default: // Run is already stopping for an earlier error
	}
}

// Ready is closed once every listener accepts connections.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addrs returns the bound address of each configured listener, in Config order, or nil before
// Ready is closed.
func (b *Broker) Addrs() []net.Addr {
	select {
	case <-b.ready:
	default:
		return nil
	}
	addrs := make([]net.Addr, len(b.listeners))
	for i, l := range b.listeners {
		addrs[i] = l.ln.Addr()
	}
	return addrs
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return b.stats.snapshot(atomic.LoadInt64(&b.srv.Info.ClientsConnected))
}

// PublishOption sets optional fields of a Publish.
type PublishOption func(*publishOptions)

type publishOptions struct {
	retain      bool
	user        []packets.UserProperty
	contentType string
	utf8        bool
	markKey     string
	mark        []byte
}

// WithMark stores value under key atomically with the message's copies queued for persistent
// sessions: after a crash either both are stored or neither. A subscriber of the broker records
// how far it delivered this way (see Broker.Mark).
func WithMark(key string, value []byte) PublishOption {
	return func(o *publishOptions) { o.markKey, o.mark = key, value }
}

// Retain makes the message retained.
func Retain() PublishOption {
	return func(o *publishOptions) { o.retain = true }
}

// WithUserProperties adds MQTT 5 user properties (MQTT 3.1.1 subscribers do not see them).
func WithUserProperties(props ...UserProperty) PublishOption {
	return func(o *publishOptions) {
		for _, p := range props {
			o.user = append(o.user, packets.UserProperty{Key: p.Key, Val: p.Value})
		}
	}
}

// WithContentType sets the MQTT 5 content type.
func WithContentType(ct string) PublishOption {
	return func(o *publishOptions) { o.contentType = ct }
}

// WithPayloadFormatUTF8 marks the payload as UTF-8 text (MQTT 5 payload format indicator 1).
func WithPayloadFormatUTF8() PublishOption {
	return func(o *publishOptions) { o.utf8 = true }
}

// Publish delivers a message to the broker's subscribers (and retains it if asked). It bypasses
// ACLs and is never passed to the Handler. qos caps the delivery QoS per subscriber.
func (b *Broker) Publish(topic string, payload []byte, qos byte, opts ...PublishOption) error {
	if !b.running.Load() {
		return ErrNotRunning
	}
	if qos > 2 {
		return fmt.Errorf("broker: publish to %q: qos %d", topic, qos)
	}
	if topic == "" || strings.ContainsAny(topic, "+#\x00") || strings.HasPrefix(topic, "$") {
		return fmt.Errorf("broker: publish: invalid topic name %q", topic)
	}
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: o.retain},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // mochi requires an id for QoS>0; inline publishes never use it
		Properties: packets.Properties{
			User:        o.user,
			ContentType: o.contentType,
		},
	}
	if o.utf8 {
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = 1, true
	}
	if o.mark != nil {
		b.sessions.commit.groups.RLock() // the copies and the mark go into one batch
		defer b.sessions.commit.groups.RUnlock()
		b.sessions.commit.put(prefixMark+o.markKey, o.mark)
	}
	if err := b.srv.InjectPacket(b.local, pk); err != nil {
		return fmt.Errorf("broker: publish to %q: %w", topic, err)
	}
	return nil
}
