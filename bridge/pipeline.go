package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tributary-iot/tributary/reasoncode"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// Log is the durable store the pipeline writes through; storage.Store
// satisfies it.
type Log interface {
	Enqueue(r *storage.Reading, durable bool) (wait func(context.Context) error, err error)
	Pending(after uint64, max int) ([]storage.Reading, error)
	CommitSigned(ctx context.Context, msgs []storage.Signed, chains map[string]streamr.ChainState) error
	ChainState(key string) (streamr.ChainState, bool, error)
}

// Clock tells the time and whether the kernel clock is synchronised. The
// Pi has no real-time clock, so until NTP syncs, wall time may be wrong.
type Clock interface {
	Now() time.Time
	BootNanos() int64 // monotonic time since boot (CLOCK_BOOTTIME), survives suspend
	Synced() bool
}

// Config configures a Pipeline.
type Config struct {
	Rules        []*Rule        // first match wins; at least one
	Signer       streamr.Signer // the gateway identity
	Log          Log
	Clock        Clock         // nil means the kernel clock (KernelClock)
	HoldUnsynced bool          // on_unsynced_clock = "hold": sign only once the clock is synced
	SignBatch    int           // readings signed per storage commit (default 256)
	SignDelay    time.Duration // how long readings gather before a batch is signed (default 10ms; negative: none)
	PresignMax   time.Duration // sign in the storing commit while a signature takes less (default DefaultPresignMax; negative: never)
	Metrics      *Metrics      // nil means unregistered metrics
	Logger       *slog.Logger  // nil discards logs
	PollInterval time.Duration // how often a held or idle signer re-checks (default 1s)
	Committed    func()        // called after signed messages are committed (wakes the forwarder); may be nil
	// LocalUnmapped accepts readings whose topic has no stream (Reason.Unmapped)
	// for local MQTT subscribers only: Ingest returns neither a wait nor a
	// Reason, and the reading is never stored, signed or forwarded.
	LocalUnmapped bool
	// Encryptor encrypts readings whose rule asks for it (issue 18);
	// EncryptedPart hears of each stream partition it starts encrypting
	// for; Publicity decides "auto" rules (nil: they never encrypt).
	Encryptor     Encryptor
	EncryptedPart func(streamr.StreamPartID)
	Publicity     Publicity
}

// Pipeline takes MQTT readings through mapping and durable storage, then
// signs them in chain order behind the durable write.
type Pipeline struct {
	cfg     Config
	address string // publisher ID as "0x…", for {address} in templates
	log     *slog.Logger
	metrics *Metrics
	kick    chan struct{}
	signer  *signer // used by Run, then by Drain, and by the store's group commit

	// startSeq is the first Seq appended by this process: readings before
	// it were received in an earlier run, possibly in another boot.
	startSeq atomic.Uint64

	mu       sync.Mutex
	progress time.Time // last time the signer committed or found nothing to do
	pending  bool      // whether the signer had work at its last look
	holding  bool
}

// New checks cfg and returns a pipeline; Run starts its signer.
func New(cfg Config) (*Pipeline, error) {
	if len(cfg.Rules) == 0 {
		return nil, errors.New("bridge: no mapping rules")
	}
	if cfg.Signer == nil || cfg.Log == nil {
		return nil, errors.New("bridge: Signer and Log are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = KernelClock{}
	}
	if cfg.SignBatch <= 0 {
		cfg.SignBatch = 256
	}
	if cfg.SignDelay == 0 {
		cfg.SignDelay = 10 * time.Millisecond
	}
	if cfg.PresignMax == 0 {
		cfg.PresignMax = DefaultPresignMax
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	cfg.Logger = componentLogger(cfg.Logger, "bridge")
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	p := &Pipeline{
		cfg:      cfg,
		address:  streamr.UserID(cfg.Signer.PublisherID()),
		log:      cfg.Logger,
		metrics:  cfg.Metrics,
		kick:     make(chan struct{}, 1),
		progress: time.Now(),
	}
	p.signer = newSigner(p)
	if ps, ok := cfg.Log.(presignedLog); ok {
		ps.SetPresigner(p.signer)
	}
	return p, nil
}

// Publish is an MQTT PUBLISH as the pipeline sees it.
type Publish struct {
	ClientID       string
	Topic          string
	Payload        []byte
	QoS            byte
	UserProperties map[string]string
}

// Ingest maps one reading and queues it for a durable write. It returns
// at once; wait blocks until the reading is fsync'd (for QoS 1 and 2), so
// the caller acknowledges it only then. Many readings of one client may
// be queued before the first is durable: their waits finish in order. A
// non-nil Reason says why the reading was refused. Neither a wait nor a
// Reason means a reading for local subscribers only (Config.LocalUnmapped).
func (p *Pipeline) Ingest(m Publish) (wait func(context.Context) error, reason *Reason) {
	mapped, reason := Map(p.cfg.Rules, p.address, Input{Topic: m.Topic, Payload: m.Payload, UserProperties: m.UserProperties})
	if reason != nil && p.cfg.LocalUnmapped && reason.Unmapped() {
		p.metrics.local.Inc()
		return nil, nil
	}
	if reason != nil {
		p.refused(m, reason)
		return nil, reason
	}
	return p.enqueue(m, mapped)
}

// Direct is a reading an app addressed to a stream partition itself (over
// HTTP, WebSocket or a Streamr node MQTT topic) rather than through the
// mapping rules.
type Direct struct {
	Source    string // names the message chain: one per app connection
	Part      streamr.StreamPartID
	Timestamp int64  // ms; 0: the time of receipt
	Payload   []byte // JSON object content
}

// IngestDirect queues d for a durable write like a QoS 1 reading that a
// rule mapped onto d.Part: the same storage, signing and forwarding, with
// its own chain per d.Source. wait returns once it is durable.
func (p *Pipeline) IngestDirect(d Direct) (wait func(context.Context) error, reason *Reason) {
	m := Publish{ClientID: d.Source, Topic: d.Part.String(), Payload: d.Payload, QoS: 1}
	if err := validObject(d.Payload); err != nil {
		reason = reject(reasoncode.PayloadFormatInvalid, "invalid_json", "stream %s: %v", d.Part, err)
		p.refused(m, reason)
		return nil, reason
	}
	return p.enqueue(m, Mapped{Part: d.Part, ContentType: streamr.ContentJSON, Timestamp: d.Timestamp})
}

// enqueue queues a mapped reading for its durable write (see Ingest).
func (p *Pipeline) enqueue(m Publish, mapped Mapped) (wait func(context.Context) error, reason *Reason) {
	now := p.cfg.Clock.Now()
	r := &storage.Reading{
		Part:        mapped.Part,
		Source:      m.ClientID,
		ReceivedAt:  now.UnixMilli(),
		BootNanos:   p.cfg.Clock.BootNanos(),
		Timestamp:   mapped.Timestamp,
		ContentType: mapped.ContentType,
		Encrypt:     p.encrypt(mapped),
		Payload:     m.Payload,
	}
	if p.cfg.HoldUnsynced && !p.cfg.Clock.Synced() { // Synced is a system call: not per reading unless held
		r.ReceivedAt = 0 // unknown: derived from BootNanos once the clock syncs
	}
	durableWait, err := p.cfg.Log.Enqueue(r, m.QoS > 0)
	if err != nil {
		reason = storeReason(err, m.Topic)
		p.refused(m, reason)
		return nil, reason
	}
	p.startSeq.CompareAndSwap(0, r.Seq)
	wait = func(ctx context.Context) error {
		if err := durableWait(ctx); err != nil {
			p.metrics.rejected.WithLabelValues("storage_error").Inc()
			p.log.Error("reading not stored", "client", m.ClientID, "topic", m.Topic, "seq", r.Seq, "err", err)
			return err
		}
		p.metrics.readingsIn.WithLabelValues(qosLabel(m.QoS)).Inc()
		p.wakeSigner()
		return nil
	}
	if m.QoS == 0 {
		p.metrics.readingsIn.WithLabelValues(qosLabel(m.QoS)).Inc()
		p.wakeSigner()
	}
	return wait, nil
}

// Wake makes the signer look for pending readings now.
func (p *Pipeline) Wake() { p.wakeSigner() }

func (p *Pipeline) wakeSigner() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func storeReason(err error, topic string) *Reason {
	if errors.Is(err, storage.ErrQuotaExceeded) || errors.Is(err, storage.ErrDiskFull) {
		return reject(reasoncode.QuotaExceeded, "quota_exceeded", "topic %q: %v", topic, err)
	}
	return reject(reasoncode.UnspecifiedError, "storage_error", "topic %q: %v", topic, err)
}

// refused counts a refused reading. The caller logs it (the broker, once and rate-limited,
// with r.Detail), so that a refusal is not logged twice.
func (p *Pipeline) refused(_ Publish, r *Reason) {
	p.metrics.rejected.WithLabelValues(r.Label).Inc()
}

func qosLabel(q byte) string {
	return string('0' + rune(q))
}

// Run signs stored readings in ingest order until ctx is done. Drain
// finishes the work after Run has returned.
func (p *Pipeline) Run(ctx context.Context) error {
	s := p.signer
	s.calibrate(ctx)
	ticker := time.NewTicker(p.cfg.PollInterval)
	defer ticker.Stop()
	for {
		n, err := s.signBatch(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			p.log.Error("signing stalled", "err", err)
		case n == p.cfg.SignBatch:
			continue // a full batch: more are waiting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
			p.gather(ctx)
		case <-ticker.C:
		}
	}
}

// gather lets readings accumulate for SignDelay before a batch is signed,
// so a trickle of readings costs one synced commit per SignDelay rather
// than one each (every synced commit rewrites at least a 4 KiB page).
func (p *Pipeline) gather(ctx context.Context) {
	if p.cfg.SignDelay <= 0 {
		return
	}
	t := time.NewTimer(p.cfg.SignDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Health reports a stalled pipeline: readings are waiting, the signer is
// not holding them on purpose, and it has made no progress for too long.
func (p *Pipeline) Health(maxStall time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending && !p.holding && time.Since(p.progress) > maxStall {
		return fmt.Errorf("signer has made no progress for %s", time.Since(p.progress).Round(time.Second))
	}
	return nil
}

// noteState records what the signer saw; an idle signer or a commit
// counts as progress.
func (p *Pipeline) noteState(pending, holding, committed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !pending || committed || holding {
		p.progress = time.Now()
	}
	p.pending, p.holding = pending, holding
}
