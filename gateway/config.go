package gateway

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/pelletier/go-toml/v2"

	"github.com/tributary-iot/tributary/appapi"
	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/statuspage"
	"github.com/tributary-iot/tributary/storage"
)

// exampleConfig documents every key; `bridge config-example` prints it
// and a test checks that it parses to the defaults.
//
//go:embed bridge.example.toml
var exampleConfig []byte

// ExampleConfig returns a config file documenting every key with its
// default.
func ExampleConfig() []byte { return bytes.Clone(exampleConfig) }

// Config is the bridge.toml file. Every default lives in defaultConfig.
type Config struct {
	StateDir    string                `toml:"state_dir"`
	MemoryLimit Size                  `toml:"memory_limit"`
	StopTimeout Duration              `toml:"stop_timeout"`
	Log         LogConfig             `toml:"log"`
	Key         KeyConfig             `toml:"key"`
	MQTT        MQTTConfig            `toml:"mqtt"`
	Storage     StorageConfig         `toml:"storage"`
	Signing     SigningConfig         `toml:"signing"`
	HTTP        HTTPConfig            `toml:"http"`
	API         APIConfig             `toml:"api"`
	WebSocket   WebSocketConfig       `toml:"websocket"`
	Overlay     OverlayConfig         `toml:"overlay"`
	Status      StatusConfig          `toml:"status"`
	Rules       []RuleConfig          `toml:"rule"`
	Subscribe   []SubscribeRuleConfig `toml:"subscribe"`
	Store       []StoreRuleConfig     `toml:"store"`
	Receipts    ReceiptsConfig        `toml:"receipts"`
	Encryption  EncryptionConfig      `toml:"encryption"`

	StreamrNetwork StreamrNetworkConfig `toml:"streamr_network"`
	Registry       RegistryConfig       `toml:"registry"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// KeyConfig selects the gateway identity.
type KeyConfig struct {
	URI                  string `toml:"uri"`                   // default file://<state_dir>/key
	PassphraseFile       string `toml:"passphrase_file"`       // file holding the key passphrase
	PassphraseEnv        string `toml:"passphrase_env"`        // environment variable holding it
	PassphraseCredential string `toml:"passphrase_credential"` // systemd credential name (LoadCredential=)
}

// MQTTConfig configures the embedded broker.
type MQTTConfig struct {
	AllowAnonymous bool   `toml:"allow_anonymous"`
	UsersFile      string `toml:"users_file"`
	Unmapped       string `toml:"unmapped"` // refuse or local: topics without a stream
	// The Streamr node's MQTT plugin: a topic that is a stream ID (with a
	// ?partition=, ?partitionKey= or ?partitionKeyField= suffix) publishes to
	// that stream, and without a users file the password must be an API key.
	StreamrNode     bool             `toml:"streamr_node"`
	PayloadMetadata bool             `toml:"payload_metadata"` // the node's payloadMetadata, for streamr_node topics
	StreamIDDomain  string           `toml:"stream_id_domain"` // the node's streamIdDomain
	Listeners       []ListenerConfig `toml:"listener"`

	// Protective limits; see broker.Config.
	MaxSessions             int      `toml:"max_sessions"`
	MaxConnectionsPerUser   int      `toml:"max_connections_per_user"`
	MaxConnectionsPerSource int      `toml:"max_connections_per_source"`
	MaxKeepAlive            Duration `toml:"max_keepalive"`
	MaxTopicLength          int      `toml:"max_topic_length"`
	MaxTopicLevels          int      `toml:"max_topic_levels"`
	WriteTimeout            Duration `toml:"write_timeout"`
	MaxClientBuffer         Size     `toml:"max_client_buffer"`
	MaxConcurrentAuth       int      `toml:"max_concurrent_auth"`
	AuthBackoffMax          Duration `toml:"auth_backoff_max"`
	LogRepeatInterval       Duration `toml:"log_repeat_interval"`
	// Persistent sessions (clean session 0; MQTT 5 session expiry > 0), kept across restarts.
	SessionExpiry      Duration `toml:"session_expiry"`       // longest a disconnected session is kept
	SessionMaxMessages int      `toml:"session_max_messages"` // QoS 1/2 messages held per session
	SessionMaxBytes    Size     `toml:"session_max_bytes"`    // topic+payload bytes held per session
	MaxQueuedBytes     Size     `toml:"max_queued_bytes"`     // held by all sessions together; "0 B": no limit
}

// ListenerConfig is one MQTT listener.
type ListenerConfig struct {
	Type     string `toml:"type"` // tcp, ws, tls, wss
	Address  string `toml:"address"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// StorageConfig bounds the on-disk log.
type StorageConfig struct {
	Quota          Size     `toml:"quota"`
	Retention      Duration `toml:"retention"`
	RetentionBytes Size     `toml:"retention_bytes"`
	GCInterval     Duration `toml:"gc_interval"`
	MinFree        Size     `toml:"min_free"`      // free space kept on the file system; "0 B" = unchecked
	CommitWindow   Duration `toml:"commit_window"` // readings gather this long per synced commit
}

// SigningConfig sets the clock policy and the signing cadence.
type SigningConfig struct {
	OnUnsyncedClock string   `toml:"on_unsynced_clock"` // sign or hold
	BatchWindow     Duration `toml:"batch_window"`      // readings gather this long per signed batch
	// SignInCommitUnder: readings are signed in the commit that stores them
	// while the key's calibrated signature takes less; 0 never.
	SignInCommitUnder Duration `toml:"sign_in_commit_under"`
}

// HTTPConfig is the local HTTP API: metrics, health, and data export.
type HTTPConfig struct {
	Address           string   `toml:"address"`             // "" disables it
	AllowAnonymous    bool     `toml:"allow_anonymous"`     // serve beyond loopback without authentication
	MaxRequests       int      `toml:"max_requests"`        // requests in flight
	MaxQueries        int      `toml:"max_queries"`         // resend queries in flight
	ReadHeaderTimeout Duration `toml:"read_header_timeout"` // per request header
	WriteTimeout      Duration `toml:"write_timeout"`       // per answer, and per write of a streamed one
	IdleTimeout       Duration `toml:"idle_timeout"`        // keep-alive connections
	MaxStatusStreams  int      `toml:"max_status_streams"`  // live status pages open at once
	StatusInterval    Duration `toml:"status_interval"`     // how often the status page is updated
	// Libp2pZeroMetrics serves libp2p's metric families whose every
	// sample is zero; by default /metrics leaves them out.
	Libp2pZeroMetrics bool `toml:"libp2p_zero_metrics"`
	// DebugPprof serves Go's profiles and execution trace under
	// /debug/pprof/ and turns on block and mutex profiling.
	DebugPprof bool `toml:"debug_pprof"`
}

// RuleConfig is one [[rule]] table; see bridge.RuleConfig.
type RuleConfig struct {
	Topic             string `toml:"topic"`
	Stream            string `toml:"stream"`
	Partition         int    `toml:"partition"`
	Partitions        int    `toml:"partitions"`
	PartitionKey      string `toml:"partition_key"`
	PartitionKeyField string `toml:"partition_key_field"`
	Content           string `toml:"content"`
	TimestampField    string `toml:"timestamp_field"`
	TimestampProperty string `toml:"timestamp_property"`
	// End-to-end encryption (issue 18): "never", "always" or "auto", and
	// who gets the group keys without a [registry].
	Encryption  string   `toml:"encryption"`
	Subscribers []string `toml:"subscribers"`
}

// defaultRule maps every topic a/b/c to 0x<address>/a/b/c.
var defaultRule = RuleConfig{Topic: "#", Stream: "{address}/{topic}", Content: "json"}

// DefaultStopTimeout bounds a graceful stop; it stays well below
// systemd/bridge.service's TimeoutStopSec (45s), so the drain's verdict is
// logged before systemd would send SIGKILL.
const DefaultStopTimeout = 30 * time.Second

// DefaultMemoryLimit is memory_limit's default. A soft limit below the live
// heap does not bound memory, it makes the GC run back to back (Go lets it
// take up to half the CPU): at 2,000 readings/s a gateway's live heap
// reaches ~58 MB within a minute (GossipSub's seen IDs and delivery records,
// swept once a minute, and Badger's compaction builders), and under the
// earlier 40 MiB a subscribing gateway fell behind 10–25 s in while its
// peak RSS was no lower. 96 MiB leaves the GC room above that heap
// (BENCHMARKS.md, "Session 14 — memory limit").
const DefaultMemoryLimit = 96 << 20

func defaultConfig() Config {
	return Config{
		StateDir:    defaultStateDir(),
		MemoryLimit: Size(DefaultMemoryLimit),
		StopTimeout: Duration(DefaultStopTimeout),
		Log:         LogConfig{Level: "info", Format: "text"},
		MQTT: MQTTConfig{
			Unmapped:                "refuse",
			MaxSessions:             broker.DefaultMaxSessions,
			MaxConnectionsPerUser:   broker.DefaultMaxConnsPerUser,
			MaxConnectionsPerSource: broker.DefaultMaxConnsPerSource,
			MaxKeepAlive:            Duration(broker.DefaultMaxKeepAlive),
			MaxTopicLength:          broker.DefaultMaxTopicLength,
			MaxTopicLevels:          broker.DefaultMaxTopicLevels,
			WriteTimeout:            Duration(broker.DefaultWriteTimeout),
			MaxClientBuffer:         Size(broker.DefaultMaxClientBuffer),
			MaxConcurrentAuth:       broker.DefaultMaxConcurrentAuth,
			AuthBackoffMax:          Duration(broker.DefaultAuthBackoffMax),
			LogRepeatInterval:       Duration(broker.DefaultLogRepeatInterval),
			Listeners:               []ListenerConfig{{Type: "tcp", Address: "127.0.0.1:1883"}},
			SessionExpiry:           Duration(broker.DefaultSessionExpiry),
			SessionMaxMessages:      broker.DefaultMaxInflight,
			SessionMaxBytes:         Size(broker.DefaultMaxSessionBytes),
			MaxQueuedBytes:          Size(broker.DefaultMaxQueuedBytes),
		},
		Storage: StorageConfig{
			Quota:      Size(2 << 30),
			Retention:  Duration(30 * 24 * time.Hour),
			GCInterval: Duration(storage.DefaultGCInterval),
			MinFree:    Size(storage.DefaultMinFreeBytes),
			// At most this much PUBACK latency, and only while readings
			// arrive often enough to share a commit (storage.Options).
			CommitWindow: Duration(time.Millisecond),
		},
		Signing:    SigningConfig{OnUnsyncedClock: "sign", BatchWindow: Duration(10 * time.Millisecond), SignInCommitUnder: Duration(bridge.DefaultPresignMax)},
		Status:     StatusConfig{ButtonHold: Duration(3 * time.Second)},
		Encryption: defaultEncryption(),
		Registry:   defaultRegistryConfig(),
		Receipts: ReceiptsConfig{
			Required: string(bridge.ReceiptsNone), Peers: []string{},
			PollInterval: Duration(30 * time.Second), Timeout: Duration(5 * time.Second),
		},
		HTTP: HTTPConfig{
			Address:           "127.0.0.1:7171",
			MaxRequests:       bridge.DefaultHTTPMaxRequests,
			MaxQueries:        bridge.DefaultHTTPMaxQueries,
			ReadHeaderTimeout: Duration(bridge.DefaultHTTPReadHeaderTimeout),
			WriteTimeout:      Duration(bridge.DefaultHTTPWriteTimeout),
			IdleTimeout:       Duration(bridge.DefaultHTTPIdleTimeout),
			MaxStatusStreams:  statuspage.DefaultMaxStreams,
			StatusInterval:    Duration(statuspage.DefaultInterval),
		},
		API: APIConfig{
			Keys:           []string{},
			Partitions:     appapi.DefaultPartitions,
			MaxMessageSize: Size(appapi.DefaultMaxBody),
			PublishTimeout: Duration(appapi.DefaultPublishTimeout),
		},
		WebSocket: WebSocketConfig{
			Address:           "127.0.0.1:7170",
			AllowedOrigins:    []string{},
			PingInterval:      Duration(appapi.DefaultPingInterval),
			DisconnectTimeout: Duration(appapi.DefaultDisconnectTimeout),
			WriteTimeout:      Duration(appapi.DefaultWSWriteTimeout),
			MaxConnections:    appapi.DefaultMaxConnections,
			MaxResend:         appapi.DefaultMaxResend,
		},
		Overlay: OverlayConfig{
			Enabled:        true,
			Listen:         overlay.ListenAddrsFor("0.0.0.0", overlay.DefaultPort),
			Bootstrap:      []string{},
			Announce:       []string{},
			RedialInterval: Duration(overlay.DefaultRedialInterval),
			MDNS:           true,
			DHT:            true,
			NAT:            true,
			MaxConnections: overlay.DefaultMaxConns,
			Retry:          Duration(time.Second),
			GapFillTimeout: Duration(5 * time.Second),
			ResendRetry:    Duration(5 * time.Second),
			MaxGapRequests: 5,

			MaxChains:             bridge.DefaultMaxChains,
			MaxChainsPerPublisher: bridge.DefaultMaxChainsPerPublisher,
			MaxHeldMessages:       bridge.DefaultMaxHeldTotal,
			ChainIdleTimeout:      Duration(bridge.DefaultChainIdleTimeout),
			MaxGapFills:           bridge.DefaultMaxGapFills,
			FillShareBytes:        bridge.DefaultFillShareBytes,
			LiveMaxAge:            Duration(bridge.DefaultLiveMaxAge),

			MaxConnsPerIP:           overlay.DefaultMaxConnsPerIP,
			MaxConnsPerSubnet:       overlay.DefaultMaxConnsPerSubnet,
			ProtectedPeers:          []string{},
			MaxPeerTopics:           overlay.DefaultMaxPeerTopics,
			ResendMaxStreams:        overlay.DefaultResendMaxStreams,
			ResendMaxStreamsPerPeer: overlay.DefaultResendMaxStreams / 4,
			ResendReservedStreams:   overlay.DefaultResendMaxStreams / 4,
			ResendBufferBytes:       overlay.DefaultResendBufferBytes,
			MaxForwardPartitions:    bridge.DefaultMaxForwardPartitions,
			PartitionIdleTimeout:    Duration(bridge.DefaultPartitionIdleTimeout),
			SeenTTL:                 Duration(overlay.DefaultSeenTTL),
			ReannounceChains:        overlay.DefaultReannounceChains,
		},
		StreamrNetwork: defaultStreamrNetwork(),
	}
}

// defaultStateDir is $STATE_DIRECTORY under systemd, else ./bridge-data.
func defaultStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd passes a colon-separated list when several are configured.
		first, _, _ := strings.Cut(d, ":")
		return first
	}
	return "bridge-data"
}

// LoadConfig reads path strictly (unknown keys are errors naming the file,
// line and key) over the defaults. An empty path gives the defaults.
func LoadConfig(path string) (*Config, error) {
	cfg := defaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeConfig(path, data, &cfg); err != nil {
			return nil, err
		}
		cfg.resolvePaths(filepath.Dir(path))
	}
	if len(cfg.Rules) == 0 {
		cfg.Rules = []RuleConfig{defaultRule}
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", displayPath(path), err)
	}
	// An absolute state directory keeps key URIs and logs unambiguous.
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("config %s: state_dir: %w", displayPath(path), err)
	}
	cfg.StateDir = abs
	return &cfg, nil
}

func displayPath(path string) string {
	if path == "" {
		return "(defaults)"
	}
	return path
}

// decodeConfig decodes data over cfg. Every unknown key and type error of
// the file is reported at once, in the file's own terms; what can be
// decoded around them is, so that validation errors join them.
func decodeConfig(path string, data []byte, cfg *Config) error {
	typeErrs, patched := checkConfigTypes(path, data)
	if len(typeErrs) == 0 {
		return decodeStrict(path, data, cfg)
	}
	if patched != nil {
		// Unknown keys are reported above; ignore them here.
		if err := toml.NewDecoder(bytes.NewReader(patched)).Decode(cfg); err == nil {
			if err := cfg.validate(); err != nil {
				typeErrs = append(typeErrs, fmt.Errorf("config %s: %w", path, err))
			}
		}
	}
	return errors.Join(typeErrs...)
}

// decodeStrict decodes a file that checkConfigTypes found no fault in; its
// errors are those the walk does not see (a key defined twice).
func decodeStrict(path string, data []byte, cfg *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	err := dec.Decode(cfg)
	var strict *toml.StrictMissingError
	var derr *toml.DecodeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &strict):
		var msgs []string
		for _, e := range strict.Errors {
			row, col := e.Position()
			msgs = append(msgs, fmt.Sprintf("%s:%d:%d: unknown key %q", path, row, col, strings.Join(e.Key(), ".")))
		}
		return errors.New(strings.Join(msgs, "\n"))
	case errors.As(err, &derr):
		row, col := derr.Position()
		// The parser's own prefix names Go's library, not the file.
		msg := strings.TrimPrefix(derr.Error(), "toml: ")
		return fmt.Errorf("%s:%d:%d: %s (key %q)", path, row, col, msg, strings.Join(derr.Key(), "."))
	}
	return fmt.Errorf("%s: %w", path, err)
}

// resolvePaths makes file paths relative to the config file's directory.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.MQTT.UsersFile)
	abs(&c.Key.PassphraseFile)
	abs(&c.API.KeysFile)
	for i := range c.MQTT.Listeners {
		abs(&c.MQTT.Listeners[i].CertFile)
		abs(&c.MQTT.Listeners[i].KeyFile)
	}
}

func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.StateDir != "", "state_dir: must not be empty")
	if err := c.Encryption.validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.StopTimeout > 0, "stop_timeout: must be positive")
	check(oneOf(c.Log.Level, "debug", "info", "warn", "error"), "log.level %q: want debug, info, warn or error", c.Log.Level)
	check(oneOf(c.Log.Format, "text", "json"), "log.format %q: want text or json", c.Log.Format)
	check(oneOf(c.Signing.OnUnsyncedClock, "sign", "hold"), "signing.on_unsynced_clock %q: want sign or hold", c.Signing.OnUnsyncedClock)
	check(oneOf(c.MQTT.Unmapped, "refuse", "local"), "mqtt.unmapped %q: want refuse or local", c.MQTT.Unmapped)
	check(c.MQTT.MaxTopicLength > 0 && c.MQTT.MaxTopicLevels > 0, "mqtt.max_topic_length and mqtt.max_topic_levels: must be positive")
	check(c.MQTT.WriteTimeout > 0 && c.MQTT.MaxClientBuffer > 0, "mqtt.write_timeout and mqtt.max_client_buffer: must be positive")
	check(c.MQTT.MaxConcurrentAuth > 0, "mqtt.max_concurrent_auth: must be positive")
	check(c.MQTT.LogRepeatInterval > 0, "mqtt.log_repeat_interval: must be positive")
	check(c.MQTT.MaxKeepAlive >= 0 && time.Duration(c.MQTT.MaxKeepAlive) <= 65535*time.Second, "mqtt.max_keepalive: 0s (no maximum) to 18h12m15s")
	check(len(c.MQTT.Listeners) > 0, "mqtt.listener: at least one listener is needed")
	for i, l := range c.MQTT.Listeners {
		n := i + 1 // as in "[[mqtt.listener]] #1"
		check(oneOf(l.Type, "tcp", "ws", "tls", "wss"), "[[mqtt.listener]] #%d: type %q: want tcp, ws, tls or wss", n, l.Type)
		check(l.Address != "", "[[mqtt.listener]] #%d: address must not be empty", n)
		secure := l.Type == "tls" || l.Type == "wss"
		check(!secure || (l.CertFile != "" && l.KeyFile != ""), "[[mqtt.listener]] #%d: type %s needs cert_file and key_file", n, l.Type)
	}
	check(c.MQTT.SessionExpiry == 0 || c.MQTT.SessionExpiry >= Duration(time.Second), "mqtt.session_expiry %s: want at least 1s", time.Duration(c.MQTT.SessionExpiry))
	check(c.MQTT.SessionMaxMessages >= 0 && c.MQTT.SessionMaxMessages < 65535, "mqtt.session_max_messages %d: want 1 to 65534", c.MQTT.SessionMaxMessages)
	check(c.MQTT.SessionMaxBytes >= 0, "mqtt.session_max_bytes: must not be negative")
	check(c.MQTT.MaxQueuedBytes >= 0, "mqtt.max_queued_bytes: must not be negative")
	check(c.Storage.Quota >= 0 && c.Storage.RetentionBytes >= 0, "storage: sizes must not be negative")
	check(c.Storage.GCInterval > 0, "storage.gc_interval: must be positive")
	check(c.Storage.CommitWindow >= 0, "storage.commit_window: must not be negative")
	check(c.Signing.BatchWindow >= 0, "signing.batch_window: must not be negative")
	check(c.Signing.SignInCommitUnder >= 0, "signing.sign_in_commit_under: must not be negative")
	if err := c.HTTP.validate(c.API.hasKeys()); err != nil {
		errs = append(errs, err)
	}
	if err := c.validateApps(); err != nil {
		errs = append(errs, err)
	}
	check(c.Overlay.Retry > 0, "overlay.retry: must be positive")
	check(c.Overlay.RedialInterval > 0, "overlay.redial_interval: must be positive")
	check(c.Overlay.ShedQueueWait >= 0, "overlay.shed_queue_wait: must not be negative (\"0s\": never shed)")
	check(c.Overlay.SeenTTL >= Duration(overlay.MinSeenTTL), "overlay.seen_ttl: must be at least %s (copies gossip still carries would pass the duplicate filter)", overlay.MinSeenTTL)
	check(c.Overlay.ShedQueueDepth >= 0, "overlay.shed_queue_depth: must not be negative (0: never shed)")
	check(c.Overlay.MaxConnections > 0, "overlay.max_connections: must be positive")
	check(!c.Overlay.Enabled || len(c.Overlay.Listen) > 0, "overlay.listen: at least one address is needed")
	if rules, err := c.compileRules(); err != nil {
		errs = append(errs, err)
	} else if _, err := newRuleSubscribers(rules, ""); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.subscriptions(""); err != nil {
		errs = append(errs, err)
	}
	if err := c.validateStreamrNetwork(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.storeParts(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := c.keyServing(); err != nil {
		errs = append(errs, err)
	}
	check(c.Overlay.GapFillTimeout > 0 && c.Overlay.ResendRetry > 0, "overlay.gap_fill_timeout and overlay.resend_retry: must be positive")
	check(c.Overlay.MaxGapRequests > 0, "overlay.max_gap_requests: must be positive")
	check(c.Overlay.MaxChains > 0 && c.Overlay.MaxChainsPerPublisher > 0 && c.Overlay.MaxHeldMessages > 0 && c.Overlay.MaxGapFills > 0 && c.Overlay.FillShareBytes > 0,
		"overlay.max_chains, max_chains_per_publisher, max_held_messages, max_gap_fills and fill_share_bytes: must be positive")
	check(c.Overlay.ChainIdleTimeout > 0 && c.Overlay.LiveMaxAge >= 0, "overlay.chain_idle_timeout: must be positive; overlay.live_max_age: must not be negative")
	check(c.Overlay.MaxConnsPerIP > 0 && c.Overlay.MaxConnsPerSubnet > 0 && c.Overlay.MaxPeerTopics > 0,
		"overlay.max_conns_per_ip, overlay.max_conns_per_subnet and overlay.max_peer_topics: must be positive")
	check(c.Overlay.ResendMaxStreams > 1 && c.Overlay.ResendMaxStreamsPerPeer > 0 &&
		c.Overlay.ResendReservedStreams > 0 && c.Overlay.ResendReservedStreams < c.Overlay.ResendMaxStreams,
		"overlay.resend_max_streams (at least 2), overlay.resend_max_streams_per_peer and overlay.resend_reserved_streams (1 to resend_max_streams-1): out of range")
	check(c.Overlay.ResendBufferBytes >= 0 && c.Overlay.ResendVerifyWorkers >= 0,
		"overlay.resend_buffer_bytes and overlay.resend_verify_workers: must not be negative (0: the default)")
	check(c.Overlay.MaxForwardPartitions > 0 && c.Overlay.PartitionIdleTimeout > 0,
		"overlay.max_forward_partitions and overlay.partition_idle_timeout: must be positive")
	if _, err := bridge.NewReceipts(c.receiptConfig(nil)); err != nil {
		errs = append(errs, fmt.Errorf("receipts: %w", err))
	}
	check(c.Receipts.PollInterval > 0 && c.Receipts.Timeout > 0, "receipts.poll_interval and receipts.timeout: must be positive")
	if ocfg, err := c.overlayConfig(nil, nil); err != nil {
		errs = append(errs, err)
	} else if err := ocfg.Check(); err != nil && c.Overlay.Enabled {
		errs = append(errs, err)
	}
	errs = append(errs, c.Registry.check()...)
	if c.Key.URI != "" {
		if err := hw.CheckURI(c.Key.URI); err != nil {
			errs = append(errs, fmt.Errorf("key.uri: %w", err))
		}
	}
	return errors.Join(errs...)
}

// CheckFiles loads the files the config names (users file, TLS
// certificates) as Run would, binding nothing. `bridge run` calls it
// before it creates the state directory or a key, and check-config is
// LoadConfig followed by it: what one refuses, the other does.
func (c *Config) CheckFiles(path string) error {
	refuse := broker.HandlerFunc(func(context.Context, *broker.Message) broker.Verdict {
		return broker.Verdict{Code: broker.UnspecifiedError}
	})
	if _, err := broker.New(brokerConfig(c, nil), refuse, slog.New(slog.DiscardHandler)); err != nil {
		return fmt.Errorf("config %s: %w", displayPath(path), err)
	}
	return nil
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

func (c *Config) compileRules() ([]*bridge.Rule, error) {
	rules := make([]*bridge.Rule, 0, len(c.Rules))
	var errs []error
	for i, r := range c.Rules {
		if c.partitionsFromChain(r) {
			r.Partitions = 1 // checked as one; the stream's metadata tells at start (resolvePartitions)
		}
		rule, err := bridge.Compile(bridge.RuleConfig(r), i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rules = append(rules, rule)
	}
	return rules, errors.Join(errs...)
}

// Duration is a time.Duration written as a string such as "30s".
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a string such as \"30s\" or \"720h\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a byte count written as a string such as "512MB" or "2GiB".
type Size int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := humanize.ParseBytes(string(b))
	if err != nil || v > 1<<62 {
		return fmt.Errorf("size %q: want a string such as \"512MB\" or \"2GiB\"", b)
	}
	*s = Size(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(humanize.IBytes(uint64(s))), nil }

func (c *Config) receiptConfig(publisher []byte) bridge.ReceiptConfig {
	return bridge.ReceiptConfig{
		Policy:    bridge.ReceiptPolicy(c.Receipts.Required),
		Peers:     c.Receipts.Peers,
		Publisher: publisher,
		Interval:  time.Duration(c.Receipts.PollInterval),
		Timeout:   time.Duration(c.Receipts.Timeout),
	}
}
