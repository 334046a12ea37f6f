package e2ee

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// Secrets is durable storage for keys; storage.Store satisfies it.
type Secrets interface {
	PutSecret(ctx context.Context, name string, value []byte) error
	Secret(name string) ([]byte, bool, error)
}

// Permissions says whether a user holds a stream permission (the
// StreamRegistry client, or a static list: Subscribers).
type Permissions interface {
	Allowed(ctx context.Context, streamID string, user []byte, p streamr.Permission, at time.Time) (bool, error)
}

// Topic publishes encoded messages in one stream partition. It is an
// alias so that callers' interfaces can name the same method set.
type Topic = interface {
	Publish(ctx context.Context, encoded [][]byte) (int, error)
}

// Config configures an Exchange. Zero values take the defaults.
type Config struct {
	Signer  streamr.Signer // the gateway identity: signs key exchange messages
	Secrets Secrets
	// Subscribers decides who gets this publisher's group keys; nil
	// refuses everyone.
	Subscribers Permissions
	RotateEvery time.Duration // in-band rotation period; 0: never

	// ServeParts makes this gateway a key server for the history it
	// stores (a [[store]] with answer_key_requests): in these partitions
	// it collects the group keys of what it stores (Collect) and answers
	// key requests addressed to their publishers, for requesters
	// KeyRequesters allows to subscribe (nil: none), with the limits of
	// its own answers.
	ServeParts    []streamr.StreamPartID
	KeyRequesters Permissions
	// KeyServers says who besides a message's publisher may answer our
	// key requests for it: whoever may publish on the stream. nil: the
	// publisher alone.
	KeyServers PublishPolicy

	KeyType           streamr.AsymmetricEncryptionType // our key requests' cipher (default RSA)
	RSABits           int                              // default streamr.DefaultRSAKeyBits (4096)
	KeyRequestTimeout time.Duration                    // how long a message waits for its key (default 30s, the SDK's)
	MaxRequestsPerSec float64                          // key requests we send (default 20, the SDK's)
	MaxAnswersPerSec  float64                          // key requests we answer, per requester (default 20)
	MaxKeysPerRequest int                              // group key IDs answered per request (default 100)
	MaxWaiting        int                              // messages waiting for keys (default 10000)

	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.RSABits == 0 {
		c.RSABits = streamr.DefaultRSAKeyBits
	}
	if c.KeyRequestTimeout <= 0 {
		c.KeyRequestTimeout = 30 * time.Second
	}
	if c.MaxRequestsPerSec <= 0 {
		c.MaxRequestsPerSec = 20
	}
	if c.MaxAnswersPerSec <= 0 {
		c.MaxAnswersPerSec = 20
	}
	if c.MaxKeysPerRequest <= 0 {
		c.MaxKeysPerRequest = 100
	}
	if c.MaxWaiting <= 0 {
		c.MaxWaiting = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Exchange is both sides of the key exchange for one gateway identity.
type Exchange struct {
	cfg     Config
	self    []byte
	log     *slog.Logger
	metrics *metrics
	limits  *logLimiter

	kxMu   sync.Mutex // held while the key exchange key is made (exchangeKey)
	mu     sync.Mutex
	topics map[streamr.StreamPartID]Topic
	pub    publisherState
	sub    subscriberState
	ks     keyServerState
}

// New returns an Exchange; it starts no goroutines of its own except
// timers of messages waiting for keys.
func New(cfg Config) (*Exchange, error) {
	if cfg.Signer == nil || cfg.Secrets == nil {
		return nil, errors.New("e2ee: Signer and Secrets are required")
	}
	cfg = cfg.withDefaults()
	switch cfg.KeyType {
	case streamr.AsymmetricRSA, streamr.AsymmetricMLKEM:
	default:
		return nil, fmt.Errorf("e2ee: unknown key exchange type %d", cfg.KeyType)
	}
	m := newMetrics(cfg.Registerer)
	x := &Exchange{
		cfg:     cfg,
		self:    cfg.Signer.PublisherID(),
		log:     cfg.Logger.With("component", "e2ee"),
		metrics: m,
		limits:  newLogLimiter(time.Minute),
		topics:  make(map[streamr.StreamPartID]Topic),
	}
	x.pub.init()
	x.sub.init(cfg.MaxRequestsPerSec)
	x.ks.init(cfg.ServeParts)
	return x, nil
}

// Attach gives the exchange the topic of a stream partition it publishes
// key exchange messages in.
func (x *Exchange) Attach(part streamr.StreamPartID, t Topic) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.topics[part] = t
}

func (x *Exchange) topic(part streamr.StreamPartID) (Topic, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	t, ok := x.topics[part]
	return t, ok
}

// HandleMessage takes a key exchange message received in a partition:
// requests for our keys are answered, responses to our requests stored.
// Other messages are ignored. It reports whether m was a key exchange
// message.
func (x *Exchange) HandleMessage(ctx context.Context, m *streamr.StreamMessage) bool {
	switch b := m.Body.(type) {
	case *streamr.GroupKeyRequest:
		x.answer(ctx, m, b)
	case *streamr.GroupKeyResponse:
		x.receive(ctx, m, b)
	default:
		return false
	}
	return true
}

// keyName is where a group key of a publisher is stored.
func keyName(publisher []byte, id string) string {
	return "gk/" + hex.EncodeToString(publisher) + "/" + id
}

// publish signs and sends one key exchange message.
func (x *Exchange) publish(ctx context.Context, part streamr.StreamPartID, body streamr.Body) error {
	t, ok := x.topic(part)
	if !ok {
		return fmt.Errorf("not joined to %s", part)
	}
	m := &streamr.StreamMessage{
		ID: streamr.MessageID{
			StreamID:        part.Stream,
			StreamPartition: int32(part.Partition),
			Timestamp:       time.Now().UnixMilli(),
			MsgChainID:      streamr.NewChainID(),
		},
		Body: body,
	}
	if err := streamr.SignMessage(ctx, x.cfg.Signer, m); err != nil {
		return fmt.Errorf("sign key exchange message: %w", err)
	}
	encoded, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encode key exchange message: %w", err)
	}
	if _, err := t.Publish(ctx, [][]byte{encoded}); err != nil {
		return fmt.Errorf("publish on %s: %w", part, err)
	}
	return nil
}

// warn logs a refusal or failure once per minute per kind, never with key
// or payload bytes.
func (x *Exchange) warn(kind, msg string, args ...any) {
	if x.limits.allow(kind) {
		x.log.Warn(msg, append(args, "kind", kind)...)
	}
}

// logLimiter lets one log line per kind through per interval.
type logLimiter struct {
	mu    sync.Mutex
	every time.Duration
	last  map[string]time.Time
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, last: make(map[string]time.Time)}
}

func (l *logLimiter) allow(kind string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.last[kind]; ok && now.Sub(t) < l.every {
		return false
	}
	l.last[kind] = now
	return true
}
