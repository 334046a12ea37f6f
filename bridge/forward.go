package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// Topic is one stream partition's overlay as the bridge uses it.
type Topic interface {
	// Publish sends encoded messages in order and returns how many went
	// out; with an error wrapping streamr.ErrNoPeers, none did (the
	// forwarder keeps such messages and retries).
	Publish(ctx context.Context, encoded [][]byte) (int, error)
	// Leave gives up this handle's membership. The partition's overlay
	// stays joined while another handle (a subscription, a storer) holds
	// it. Leave is idempotent; the handle is not used after it.
	Leave() error
}

// Overlay joins stream partition overlays. deliver receives validated
// messages from other publishers (nil for publish-only joins).
type Overlay interface {
	Join(part streamr.StreamPartID, deliver func(msg *streamr.StreamMessage, encoded []byte)) (Topic, error)
}

// ForwardLog is the signed message log the forwarder reads, and where it
// keeps its positions; storage.Store satisfies it.
type ForwardLog interface {
	// OwnAfter lists the log after pos; other publishers' messages
	// (ReadingSeq 0, which the forwarder steps over) without Encoded.
	OwnAfter(pos uint64, max int) ([]storage.Logged, error)
	LastPos() uint64
	Cursor(name string) (uint64, error)
	SetCursors(ctx context.Context, cursors map[string]uint64) error
}

// Forwarder sends signed messages from storage into the overlay, in log
// order per stream partition. A partition without peers holds its
// messages back (they stay in storage) without holding up the others.
//
// Flow control: only messages near the head of the log go out by gossip,
// which has no back-pressure (a receiver that cannot keep up drops what
// overflows its queues). Of a backlog — everything more than
// gossipWindow positions behind the head, as after an outage — only each
// chain's newest message is published; receivers see from its prevMsgRef
// that they miss its predecessors and fetch them with resend requests,
// whose streams carry transport back-pressure, at their own pace. So a
// fast publisher never overruns a slow receiver with a backlog, and live
// messages never wait behind one.
//
// Only this gateway's own messages (made from its readings) are
// forwarded; those it stores for others are served by resend.
//
// Positions: a pass is woken by the commit of new messages and publishes
// them at once; what went out is kept in memory and saved (a synced
// write) at most once per cursorSaveInterval and when Run returns, not
// after every pass, so forwarding costs no fsync of its own per commit
// and does not queue behind one. After a crash the messages of the last
// unsaved interval go out again: receivers drop them as duplicates
// (pubsub's seen cache, the Orderer's positions).
//
// It joins a partition's overlay when it has something to send and
// leaves it after IdleTimeout with nothing to send, and keeps at most
// MaxPartitions joined: every distinct MQTT topic can name a partition,
// and each joined one costs goroutines and gossip heartbeats.
type Forwarder struct {
	store   ForwardLog
	overlay Overlay
	cfg     ForwardConfig
	log     *slog.Logger
	kick    chan struct{}
	cursors string // prefix of the saved positions

	topics map[streamr.StreamPartID]*forwardTopic
	sent   map[streamr.StreamPartID]uint64 // last forwarded position per part
	low    uint64                          // every position ≤ low is forwarded
	// unsaved are positions not yet saved (by name), savedAt when they
	// last were.
	unsaved map[string]uint64
	savedAt time.Time
	held    atomic.Bool // the last pass held messages back for want of peers
	// heldParts are the partitions holding messages back after the last
	// pass, each since when (for the status page).
	heldParts atomic.Pointer[map[streamr.StreamPartID]time.Time]
	// settledFrom is when the latest pass began that left nothing to send
	// but messages held back for want of peers (UnixNano).
	settledFrom atomic.Int64

	backlogLen prometheus.Gauge
	skipped    prometheus.Counter
	joinedLen  prometheus.Gauge
	left       *prometheus.CounterVec
	refused    prometheus.Counter
	denied     *prometheus.CounterVec
	logs       *logLimiter
}

// forwardTopic is a partition the forwarder joined.
type forwardTopic struct {
	t    Topic
	used time.Time // last publish that sent everything it was given
	held bool      // messages are held back for want of peers
	// heldSince is when held last became true.
	heldSince time.Time
}

func (ft *forwardTopic) setHeld(held bool, now time.Time) {
	if held && !ft.held {
		ft.heldSince = now
	}
	ft.held = held
}

// PermissionChecker answers whether a user holds a permission on a stream
// at a time: the StreamRegistry client. A non-nil error comes with false
// and means it could not decide (the chain was not reachable).
type PermissionChecker interface {
	Allowed(ctx context.Context, streamID string, user []byte, p streamr.Permission, at time.Time) (bool, error)
}

// ForwardConfig configures a Forwarder; zero values take the defaults.
type ForwardConfig struct {
	// Permissions, when set, is asked before a partition's messages go
	// out in a pass: without Publish for Publisher on the stream they stay
	// in storage and go out in the first pass after the permission appears.
	Permissions PermissionChecker
	Publisher   []byte

	Retry         time.Duration    // how often partitions without peers are tried again
	MaxPartitions int              // partitions joined at once for forwarding
	IdleTimeout   time.Duration    // a partition with nothing to send for this long is left
	LogInterval   time.Duration    // repeated warnings at most once per interval
	Now           func() time.Time // the clock of IdleTimeout; nil: time.Now
	Registerer    prometheus.Registerer
	Logger        *slog.Logger // nil: discard
	// Name, when set, names another forwarder than the overlay's (the
	// Streamr Network's): its positions are kept under Name+"/" and its
	// metrics are tributary_<Name>_forward_*. "": the overlay forwarder,
	// positions "forward/…".
	Name string
	// SendBacklog sends every message of a backlog in order instead of
	// each chain's newest: for receivers that cannot fetch the rest from
	// this gateway by resend (the Streamr Network's proxies).
	SendBacklog bool
}

// Defaults of ForwardConfig.
const (
	DefaultForwardRetry         = time.Second
	DefaultMaxForwardPartitions = 256
	DefaultPartitionIdleTimeout = 10 * time.Minute
	defaultForwardLogInterval   = 10 * time.Second
)

func (c ForwardConfig) withDefaults() ForwardConfig {
	if c.Retry <= 0 {
		c.Retry = DefaultForwardRetry
	}
	if c.MaxPartitions <= 0 {
		c.MaxPartitions = DefaultMaxForwardPartitions
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultPartitionIdleTimeout
	}
	if c.LogInterval <= 0 {
		c.LogInterval = defaultForwardLogInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// errPartitionCap holds a partition's messages back while MaxPartitions
// are joined and none can be left.
var errPartitionCap = errors.New("max_forward_partitions joined, each with messages held back")

// gossipWindow is how far behind the log head, in positions, a message
// may be and still go out by gossip. A burst of this size fits the
// receivers' validation queues (4,096) with room to spare.
const gossipWindow = 1024

// forwardBatch is how many log entries one read takes, and the most
// messages one Publish carries.
const forwardBatch = 512

// NewForwarder returns a forwarder; Run starts it.
func NewForwarder(store ForwardLog, overlay Overlay, cfg ForwardConfig) *Forwarder {
	cfg = cfg.withDefaults()
	log := componentLogger(cfg.Logger, "forwarder")
	metric, cursors := "tributary_forward_", "forward/"
	if cfg.Name != "" {
		log = log.With("forwarder", cfg.Name)
		metric, cursors = "tributary_"+cfg.Name+"_forward_", cfg.Name+"/"
	}
	f := &Forwarder{
		store: store, overlay: overlay, cfg: cfg, log: log, cursors: cursors,
		kick:    make(chan struct{}, 1),
		logs:    newLogLimiter(log, cfg.LogInterval),
		topics:  make(map[streamr.StreamPartID]*forwardTopic),
		sent:    make(map[streamr.StreamPartID]uint64),
		unsaved: make(map[string]uint64),
		backlogLen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metric + "backlog_messages", Help: "Signed messages not yet forwarded into the overlay.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metric + "pulled_total",
			Help: "Backlog messages not gossiped but left for receivers to fetch by resend (each chain's newest is gossiped).",
		}),
		joinedLen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metric + "partitions", Help: "Stream partitions joined for forwarding.",
		}),
		left: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric + "partitions_left_total",
			Help: "Stream partitions the forwarder left, by reason: idle (partition_idle_timeout) or cap (max_forward_partitions, least recently used).",
		}, []string{"reason"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metric + "partitions_refused_total",
			Help: "Joins put off at max_forward_partitions because every joined partition held messages back; the messages stay in storage.",
		}),
	}
	f.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metric + "publish_refused_total",
		Help: "Passes that held a stream partition's messages in storage for want of Publish permission on the stream, by reason: denied (the StreamRegistry says no) or unreachable.",
	}, []string{"reason"})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(f.backlogLen, f.skipped, f.joinedLen, f.left, f.refused, f.denied)
	}
	return f
}

// HoldingBack reports whether messages are waiting in storage for peers.
func (f *Forwarder) HoldingBack() bool { return f.held.Load() }

// HeldParts returns the joined partitions whose messages wait in storage
// for peers, each with when it began to hold them back.
func (f *Forwarder) HeldParts() map[streamr.StreamPartID]time.Time {
	if m := f.heldParts.Load(); m != nil {
		return *m
	}
	return nil
}

// SettledSince reports whether a pass that began at or after t has sent
// everything committed before t, apart from messages held back for want
// of peers. A graceful stop waits for it.
func (f *Forwarder) SettledSince(t time.Time) bool {
	return f.settledFrom.Load() >= t.UnixNano()
}

// Notify wakes the forwarder after new messages were committed.
func (f *Forwarder) Notify() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Run forwards until ctx is done.
func (f *Forwarder) Run(ctx context.Context) error {
	low, err := f.store.Cursor(f.lowCursor())
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	f.low = low
	f.savedAt = time.Now()
	defer f.saveOnStop(ctx)
	ticker := time.NewTicker(f.cfg.Retry)
	defer ticker.Stop()
	for {
		began := time.Now()
		more, err := f.pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			f.log.Warn("forwarding failed; retrying", "err", err)
		case more:
			continue
		default:
			f.settledFrom.Store(began.UnixNano())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.kick:
		case <-ticker.C:
		}
	}
}

func (f *Forwarder) lowCursor() string { return f.cursors + "low" }

func (f *Forwarder) partCursor(part streamr.StreamPartID) string {
	return f.cursors + "part/" + part.String()
}

// maxScan bounds how far one pass reads, so positions are saved and the
// tips of a long backlog go out as the scan proceeds.
const maxScan = 64 * forwardBatch

// pass forwards from the low-water mark, skipping the partitions that
// have no peers. It reports whether it stopped at maxScan with nothing
// held back, so more may follow at once.
func (f *Forwarder) pass(ctx context.Context) (bool, error) {
	head := f.store.LastPos()
	f.backlogLen.Set(float64(head - min(f.low, head)))
	cutoff := head - min(head, gossipWindow)
	if f.cfg.SendBacklog {
		cutoff = 0 // positions start at 1: nothing is backlog
	}
	ps := &passState{f: f, cutoff: cutoff, parts: make(map[streamr.StreamPartID]*partPass), dirty: make(map[string]uint64)}
	pos, scanned := f.low, 0
	for scanned < maxScan && ctx.Err() == nil {
		entries, err := f.store.OwnAfter(pos, forwardBatch)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			ps.add(ctx, e)
			pos = e.Pos
		}
		ps.flushLive(ctx)
		scanned += len(entries)
		if len(entries) < forwardBatch {
			break
		}
	}
	ps.flushAll(ctx)
	newLow := pos
	if ps.firstHeld > 0 {
		newLow = ps.firstHeld - 1 // the low-water mark cannot pass a held message
	}
	if newLow != f.low {
		ps.dirty[f.lowCursor()] = newLow
	}
	maps.Copy(f.unsaved, ps.dirty)
	f.low = newLow
	f.settleTopics(ps, scanned < maxScan)
	f.held.Store(ps.anyBlocked)
	f.backlogLen.Set(float64(head - min(newLow, head)))
	if time.Since(f.savedAt) >= cursorSaveInterval {
		if err := f.saveCursors(ctx); err != nil {
			return false, err
		}
	}
	return scanned >= maxScan && !ps.anyBlocked, nil
}

// cursorSaveInterval is how often forwarding positions are saved while
// messages go out (see Forwarder).
const cursorSaveInterval = time.Second

// saveCursors saves the positions not yet saved. They are saved even when
// ctx has ended: what went out must not go out again after a restart.
func (f *Forwarder) saveCursors(ctx context.Context) error {
	f.savedAt = time.Now()
	if len(f.unsaved) == 0 {
		return nil
	}
	if err := f.store.SetCursors(context.WithoutCancel(ctx), f.unsaved); err != nil {
		return fmt.Errorf("save forwarding positions: %w", err) // kept for the next try
	}
	clear(f.unsaved)
	return nil
}

// saveOnStop saves the positions when Run returns.
func (f *Forwarder) saveOnStop(ctx context.Context) {
	if err := f.saveCursors(ctx); err != nil {
		f.log.Warn("forwarding positions not saved on stop: the last messages may go out again after a restart", "err", err)
	}
}

// passState is one pass's progress.
type passState struct {
	f          *Forwarder
	cutoff     uint64 // entries at or before it are backlog
	parts      map[streamr.StreamPartID]*partPass
	dirty      map[string]uint64 // cursors to save
	firstHeld  uint64            // first position held back; 0: none
	anyBlocked bool
}

// partPass is one partition's share of a pass. Backlog entries are
// skipped, remembering each chain's newest (its tip); they count as
// forwarded once the tips are published, which happens before any later
// message of the partition goes out, so the partition's cursor never
// passes an entry that neither went out nor is covered by a tip.
type partPass struct {
	blocked   bool
	permitted bool                      // this gateway may publish on the stream (asked in this pass)
	tips      map[string]storage.Logged // chain → newest skipped entry
	skipFirst uint64                    // first skipped entry not yet covered by published tips; 0: none
	skipLast  uint64
	skipped   int
	live      []storage.Logged
}

func (ps *passState) part(id streamr.StreamPartID) *partPass {
	pp, ok := ps.parts[id]
	if !ok {
		pp = &partPass{tips: make(map[string]storage.Logged)}
		ps.parts[id] = pp
	}
	return pp
}

// mayPublish asks the PermissionChecker whether this gateway may publish
// on the partition's stream now, counting and logging a refusal.
func (f *Forwarder) mayPublish(ctx context.Context, id streamr.StreamPartID) bool {
	if f.cfg.Permissions == nil {
		return true
	}
	ok, err := f.cfg.Permissions.Allowed(ctx, string(id.Stream), f.cfg.Publisher, streamr.PermissionPublish, f.cfg.Now())
	switch {
	case err != nil:
		f.denied.WithLabelValues("unreachable").Inc()
		f.logs.Warn("permission", "not publishing: the StreamRegistry could not be asked for Publish permission; messages stay in storage",
			"stream", string(id.Stream), "publisher", streamr.UserID(f.cfg.Publisher), "err", err)
	case !ok:
		f.denied.WithLabelValues("denied").Inc()
		f.logs.Warn("permission", "not publishing: this gateway has no Publish permission on the stream in the StreamRegistry; messages stay in storage until it is granted",
			"stream", string(id.Stream), "publisher", streamr.UserID(f.cfg.Publisher))
	}
	return ok
}

func (ps *passState) add(ctx context.Context, e storage.Logged) {
	pp := ps.part(e.Part)
	if pp.blocked {
		ps.hold(e.Pos)
		return
	}
	sent, err := ps.f.sentUpTo(e.Part)
	if err != nil {
		ps.f.log.Warn("read forwarding position", "stream_part", e.Part.String(), "err", err)
		ps.block(pp, e.Pos)
		return
	}
	if e.Pos <= sent || e.ReadingSeq == 0 {
		// Forwarded before a restart or an earlier pass, or a message of
		// another publisher kept for a [[store]] rule: pubsub relayed it
		// when it arrived, and resend requests fetch it from here.
		return
	}
	if !pp.permitted {
		if !ps.f.mayPublish(ctx, e.Part) {
			ps.block(pp, e.Pos)
			return
		}
		pp.permitted = true // asked once per partition and pass
	}
	if e.Pos <= ps.cutoff {
		pp.tips[logChain(e)] = e
		if pp.skipFirst == 0 {
			pp.skipFirst = e.Pos
		}
		pp.skipLast = e.Pos
		pp.skipped++
		return
	}
	pp.live = append(pp.live, e)
	if len(pp.live) == forwardBatch {
		ps.flush(ctx, e.Part, pp)
	}
}

func (ps *passState) hold(pos uint64) {
	if ps.firstHeld == 0 || pos < ps.firstHeld {
		ps.firstHeld = pos
	}
}

func (ps *passState) block(pp *partPass, pos uint64) {
	pp.blocked = true
	ps.anyBlocked = true
	ps.hold(pos)
	if pp.skipFirst > 0 {
		ps.hold(pp.skipFirst)
	}
	pp.tips, pp.live, pp.skipFirst = nil, nil, 0
}

// flushLive publishes the live entries gathered from one read.
func (ps *passState) flushLive(ctx context.Context) {
	for id, pp := range ps.parts {
		if len(pp.live) > 0 {
			ps.flush(ctx, id, pp)
		}
	}
}

// flushAll publishes everything gathered, tips included.
func (ps *passState) flushAll(ctx context.Context) {
	for id, pp := range ps.parts {
		ps.flush(ctx, id, pp)
	}
}

// flush publishes a partition's tips, then its live entries.
func (ps *passState) flush(ctx context.Context, id streamr.StreamPartID, pp *partPass) {
	if pp.blocked {
		return
	}
	if len(pp.tips) > 0 {
		tips := sortedTips(pp.tips)
		if n, err := ps.publish(ctx, id, tips); n < len(tips) {
			ps.f.logPublishError(id, err)
			ps.block(pp, pp.skipFirst)
			return
		}
		ps.f.skipped.Add(float64(pp.skipped - len(tips)))
		ps.f.sent[id] = pp.skipLast
		ps.dirty[ps.f.partCursor(id)] = pp.skipLast
		pp.tips, pp.skipFirst, pp.skipped = make(map[string]storage.Logged), 0, 0
	}
	if len(pp.live) == 0 {
		return
	}
	n, err := ps.publish(ctx, id, pp.live)
	if n > 0 {
		last := pp.live[n-1].Pos
		ps.f.sent[id] = last
		ps.dirty[ps.f.partCursor(id)] = last
	}
	if n < len(pp.live) {
		ps.f.logPublishError(id, err)
		ps.block(pp, pp.live[n].Pos)
		return
	}
	pp.live = pp.live[:0]
}

func sortedTips(tips map[string]storage.Logged) []storage.Logged {
	out := make([]storage.Logged, 0, len(tips))
	for _, e := range tips {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b storage.Logged) int { return cmp.Compare(a.Pos, b.Pos) })
	return out
}

// publish sends entries of one partition in order and returns how many
// went out.
func (ps *passState) publish(ctx context.Context, part streamr.StreamPartID, entries []storage.Logged) (int, error) {
	ft, err := ps.topic(part)
	if err != nil {
		return 0, err
	}
	encoded := make([][]byte, len(entries))
	for i, e := range entries {
		encoded[i] = e.Encoded
	}
	n, err := ft.t.Publish(ctx, encoded)
	now := ps.f.cfg.Now()
	if ft.setHeld(n < len(entries), now); !ft.held {
		ft.used = now
	}
	return n, err
}

func (f *Forwarder) logPublishError(part streamr.StreamPartID, err error) {
	if errors.Is(err, errPartitionCap) {
		f.refused.Inc()
		f.logs.Warn("partition_cap", "stream partition held back in storage: max_forward_partitions joined, each holding messages back for want of peers",
			"stream_part", part.String(), "max_forward_partitions", f.cfg.MaxPartitions)
		return
	}
	if err != nil && !errors.Is(err, streamr.ErrNoPeers) && !errors.Is(err, context.Canceled) {
		f.log.Warn("forward messages", "stream_part", part.String(), "err", err)
	}
}

// logChain names the chain of a logged message; an undecodable one gets
// its own key, so it is its own tip.
func logChain(e storage.Logged) string {
	m, err := streamr.Unmarshal(e.Encoded)
	if err != nil {
		return fmt.Sprintf("undecodable/%d", e.Pos)
	}
	return m.ID.PublisherHex() + "\x00" + m.ID.MsgChainID
}

func (f *Forwarder) sentUpTo(part streamr.StreamPartID) (uint64, error) {
	if pos, ok := f.sent[part]; ok {
		return pos, nil
	}
	pos, err := f.store.Cursor(f.partCursor(part))
	if err != nil {
		return 0, err
	}
	f.sent[part] = pos
	return pos, nil
}

// topic returns the partition's joined overlay, joining it on demand. At
// MaxPartitions it first leaves the least recently used partition that
// has nothing left to send.
func (ps *passState) topic(part streamr.StreamPartID) (*forwardTopic, error) {
	f := ps.f
	if ft, ok := f.topics[part]; ok {
		return ft, nil
	}
	if len(f.topics) >= f.cfg.MaxPartitions {
		victim, ok := ps.leastRecentlyUsed()
		if !ok {
			return nil, fmt.Errorf("join overlay of %s: %w", part, errPartitionCap)
		}
		f.leave(victim, "cap")
	}
	t, err := f.overlay.Join(part, nil)
	if err != nil {
		return nil, fmt.Errorf("join overlay of %s: %w", part, err)
	}
	ft := &forwardTopic{t: t, used: f.cfg.Now()}
	f.topics[part] = ft
	f.joinedLen.Set(float64(len(f.topics)))
	f.log.Debug("forwarding into overlay", "stream_part", part.String())
	return ft, nil
}

// leastRecentlyUsed picks the joined partition to leave for a new one:
// the least recently used of those with nothing held back and nothing
// gathered in this pass; failing that, the one that has held messages
// back for want of peers the longest, if for IdleTimeout at least. Its
// messages stay in storage and it is joined again for them, so that
// MaxPartitions partitions nobody listens to cannot keep every other
// partition out for good.
func (ps *passState) leastRecentlyUsed() (streamr.StreamPartID, bool) {
	var victim, stale streamr.StreamPartID
	var oldest, staleTopic *forwardTopic
	now := ps.f.cfg.Now()
	for id, ft := range ps.f.topics {
		switch {
		case ps.pending(id) && !ft.held:
		case !ft.held:
			if oldest == nil || ft.used.Before(oldest.used) {
				victim, oldest = id, ft
			}
		case now.Sub(ft.heldSince) >= ps.f.cfg.IdleTimeout:
			if staleTopic == nil || ft.heldSince.Before(staleTopic.heldSince) {
				stale, staleTopic = id, ft
			}
		}
	}
	if oldest != nil {
		return victim, true
	}
	return stale, staleTopic != nil
}

// pending reports whether the pass gathered entries of id not yet sent.
func (ps *passState) pending(id streamr.StreamPartID) bool {
	pp := ps.parts[id]
	return pp != nil && (pp.blocked || len(pp.live) > 0 || len(pp.tips) > 0)
}

// settleTopics updates what the joined partitions hold back and leaves
// those idle for IdleTimeout. After a complete scan, a partition holds
// messages back only if this pass blocked it.
func (f *Forwarder) settleTopics(ps *passState, complete bool) {
	now := f.cfg.Now()
	defer f.noteHeld()
	for id, ft := range f.topics {
		pp := ps.parts[id]
		switch {
		case pp != nil && pp.blocked:
			ft.setHeld(true, now)
		case pp != nil || complete:
			ft.setHeld(false, now)
		}
		if !ft.held && now.Sub(ft.used) >= f.cfg.IdleTimeout {
			f.leave(id, "idle")
		}
	}
}

// noteHeld publishes which partitions hold messages back (HeldParts).
func (f *Forwarder) noteHeld() {
	held := make(map[streamr.StreamPartID]time.Time)
	for id, ft := range f.topics {
		if ft.held {
			held[id] = ft.heldSince
		}
	}
	f.heldParts.Store(&held)
}

func (f *Forwarder) leave(id streamr.StreamPartID, reason string) {
	ft := f.topics[id]
	delete(f.topics, id)
	f.joinedLen.Set(float64(len(f.topics)))
	f.left.WithLabelValues(reason).Inc()
	if err := ft.t.Leave(); err != nil {
		f.log.Warn("leave stream partition", "stream_part", id.String(), "reason", reason, "err", err)
	}
}
