package bridge

import (
	"container/heap"
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// Deliver receives messages in chain order.
type Deliver func(*streamr.StreamMessage, []byte)

// Resender fetches messages of one chain that a subscriber missed, from
// the publisher or from nodes that store the stream. The messages it
// returns must be validated (signature, stream part) like overlay ones.
type Resender interface {
	Resend(ctx context.Context, q streamr.ResendQuery) ([]streamr.Envelope, error)
}

// PositionStore persists how far each chain was delivered, so a restarted
// subscriber asks for what it missed instead of skipping it.
type PositionStore interface {
	ChainState(key string) (streamr.ChainState, bool, error)
	SaveChainStates(ctx context.Context, states map[string]streamr.ChainState) error
}

// OrderConfig configures an Orderer. Zero durations and counts take the
// Streamr SDK's defaults.
type OrderConfig struct {
	Name           string        // distinguishes the positions of several orderers (e.g. "mqtt", "store")
	Positions      PositionStore // required
	Resender       Resender      // nil: gaps are waited out, then skipped
	GapFillTimeout time.Duration // wait for a missing message before asking (default 5s)
	RetryInterval  time.Duration // between resend requests for one gap (default 5s)
	MaxGapRequests int           // requests before a gap is given up (default 5)
	MaxHeld        int           // messages held per chain while a gap is open (default 10,000)
	// KeepGaps, when the held bound is hit, drops the newest held messages
	// (resend brings them back later) instead of giving the gap up: a
	// storage node must not lose messages to a burst.
	KeepGaps bool
	// FromChainStart takes up a chain seen for the first time from its
	// first message, fetching what came before the first one heard: a
	// storage node keeps chains complete. Otherwise a new chain is taken up
	// from about when the Orderer started, as an SDK subscriber does.
	FromChainStart bool
	FlushInterval  time.Duration // how often delivered positions are saved (default 100ms)
	// LastLoss, if set, says when the overlay last lost live messages of
	// a partition that it knows of: shed unvalidated, or dropped at a full
	// validation or delivery queue (overlay.Node.LastLoss; zero: never). A
	// gap opening within GapFillTimeout of such a loss is that loss, asked
	// for after overdueWait instead of waited out for GapFillTimeout; a
	// chain that went quiet after it is probed for a lost tail (probeDue).
	LastLoss func(streamr.StreamPartID) time.Time

	// Bounds against a publisher (or many) opening chains at will. A
	// message of a new chain beyond them is dropped, counted and logged.
	MaxChains             int           // chains tracked at once (default DefaultMaxChains)
	MaxChainsPerPublisher int           // chains of one publisher tracked at once (default DefaultMaxChainsPerPublisher)
	MaxHeldTotal          int           // messages held behind gaps, all chains together (default DefaultMaxHeldTotal)
	IdleTimeout           time.Duration // a chain without messages this long leaves memory; its position stays saved (default DefaultChainIdleTimeout)
	MaxFills              int           // resend requests in flight (default DefaultMaxGapFills)
	// LiveMaxAge bounds how old a message published before the Orderer
	// started may be to take up a chain it has no position for (default
	// DefaultLiveMaxAge; negative: no bound). Older ones are dropped: a peer
	// replaying a publisher's old messages cannot pass them off as live.
	// Not applied with FromChainStart. Messages delivered later than this
	// after their timestamp count as history (see IsHistory).
	LiveMaxAge  time.Duration
	LogInterval time.Duration    // repeated warnings are written at most once per interval (default 10s)
	Now         func() time.Time // the wall clock; nil: time.Now
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
}

// Defaults of the chain bounds. A gateway publishes one chain per stream
// partition; an SDK publisher starts one per partition per session, and
// idle ones leave memory after DefaultChainIdleTimeout.
const (
	DefaultMaxChains             = 4096
	DefaultMaxChainsPerPublisher = 64
	DefaultMaxHeldTotal          = 20_000
	DefaultChainIdleTimeout      = 10 * time.Minute
	DefaultMaxGapFills           = 4
	DefaultLiveMaxAge            = 30 * time.Second
)

// Orderer delivers each (publisher, chain) of a stream partition in order
// and exactly once: it drops duplicates and stale messages, holds messages
// that arrive after a gap (detected from prevMsgRef), and fills gaps with
// resend requests. It is safe for concurrent use.
type Orderer struct {
	cfg     OrderConfig
	log     *slog.Logger
	metrics *orderMetrics

	// start is when the Orderer began, less a clock-skew margin: a chain
	// seen for the first time is taken up from its first message at or
	// after start, so a predecessor published after the subscriber started
	// is waited for (and filled) rather than skipped.
	start int64

	mu      sync.Mutex
	chains  chainTable
	held    int // messages held, all chains
	dirty   map[string]streamr.ChainState
	keyBuf  []byte // a position key being looked up, under mu
	wake    chan struct{}
	fills   sync.WaitGroup // resend requests in flight
	filling int            // how many, under mu

	logMu  sync.Mutex // guards warned; taken with or without mu
	warned map[string]*logLimit
}

// Gap filling. A gap is asked for after GapFillTimeout, in case gossip
// merely reordered the messages, except when its newest missing message
// is already older than that: then waiting cannot help (a backlog whose
// chain tip arrived alone, see Forwarder) and it is asked for after
// overdueWait. A range is fetched in pages of fillPage messages, the next
// page asked for as soon as one arrives, by at most MaxFills requests at
// once; each page is validated, ordered and handed on before the next is
// read, so a slow receiver takes a backlog at its own pace.
const (
	overdueWait = 100 * time.Millisecond
	fillPage    = 2000
)

type orderMetrics struct {
	delivered, stale, held, gaps, filled, lost, overflow prometheus.Counter
	notLive, pruned, evicted, probes                     prometheus.Counter
	refused                                              *prometheus.CounterVec
}

func newOrderMetrics(name string, reg prometheus.Registerer) *orderMetrics {
	c := func(metric, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_order_" + metric + "_total", Help: help, ConstLabels: prometheus.Labels{"orderer": name},
		})
	}
	m := &orderMetrics{
		delivered: c("delivered", "Messages delivered in chain order."),
		stale:     c("stale", "Duplicate or already delivered messages dropped."),
		held:      c("held", "Messages held back behind a gap."),
		gaps:      c("gaps", "Gaps detected from prevMsgRef."),
		filled:    c("filled", "Messages recovered by resend requests."),
		lost:      c("lost", "Gaps given up after every resend attempt failed."),
		overflow:  c("overflow", "Times a chain, or all chains together, held too many messages behind a gap."),
		notLive:   c("not_live", "Messages dropped as too old to take up a chain not seen before."),
		pruned:    c("chains_pruned", "Idle chains dropped from memory (their positions stay saved)."),
		evicted:   c("chains_evicted", "Chains without an open gap dropped from memory to make room for a new one."),
		probes:    c("tail_probes", "Resend requests for what may follow a quiet chain's last message, after a loss of its partition."),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_order_chains_refused_total", Help: "Messages of a new chain dropped at a chain limit, by limit.",
			ConstLabels: prometheus.Labels{"orderer": name},
		}, []string{"limit"}),
	}
	if reg != nil {
		reg.MustRegister(m.delivered, m.stale, m.held, m.gaps, m.filled, m.lost, m.overflow,
			m.notLive, m.pruned, m.evicted, m.probes, m.refused)
	}
	return m
}

// NewOrderer returns an Orderer; Run persists positions and fills gaps.
func NewOrderer(cfg OrderConfig) *Orderer {
	if cfg.GapFillTimeout <= 0 {
		cfg.GapFillTimeout = 5 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	if cfg.MaxGapRequests <= 0 {
		cfg.MaxGapRequests = 5
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 10_000
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 100 * time.Millisecond
	}
	cfg.setChainDefaults()
	cfg.Logger = componentLogger(cfg.Logger, "order")
	o := &Orderer{
		start:   cfg.Now().Add(-startSkew).UnixMilli(),
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: newOrderMetrics(cfg.Name, cfg.Registerer),
		chains:  newChainTable(),
		dirty:   make(map[string]streamr.ChainState),
		wake:    make(chan struct{}, 1),
		warned:  make(map[string]*logLimit),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_order_chains", Help: "Chains tracked in memory.", ConstLabels: prometheus.Labels{"orderer": cfg.Name},
		}, func() float64 { return float64(o.Chains()) }))
	}
	return o
}

func (c *OrderConfig) setChainDefaults() {
	positive := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	positive(&c.MaxChains, DefaultMaxChains)
	positive(&c.MaxChainsPerPublisher, DefaultMaxChainsPerPublisher)
	positive(&c.MaxHeldTotal, DefaultMaxHeldTotal)
	positive(&c.MaxFills, DefaultMaxGapFills)
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultChainIdleTimeout
	}
	if c.LiveMaxAge == 0 {
		c.LiveMaxAge = DefaultLiveMaxAge
	}
	if c.LogInterval <= 0 {
		c.LogInterval = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Chains returns how many chains are tracked in memory.
func (o *Orderer) Chains() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.chains.byKey)
}

// startSkew is how far a publisher's clock may be behind ours before a
// chain's first messages are mistaken for ones from before we started.
const startSkew = 30 * time.Second

// orderedChain is one (stream part, publisher, chain) at the subscriber.
type orderedChain struct {
	key     string
	part    streamr.StreamPartID
	pub     []byte
	id      string
	deliver Deliver
	last    *streamr.MessageRef // last delivered
	held    msgHeap

	refetchTo   *streamr.MessageRef // newest message dropped at the held bound (KeepGaps): fetch up to it
	gapSince    time.Time           // zero: no open gap
	lastRequest time.Time
	requests    int
	filling     bool

	// Tail probes (see probeDue): the loss the last completed probe
	// covered, the one in flight, when one was last sent and how many
	// failed for the loss being probed.
	probedLoss, probing time.Time
	lastProbe           time.Time
	probeFails          int

	publisher     string        // hex, the chainTable's per-publisher key
	active        time.Time     // when a message of it last arrived
	elem, pubElem *list.Element // in chainTable.lru and in its publisher's list
}

// quiet reports whether c has nothing open: no gap, no held message, no
// request in flight. Such a chain can leave memory without loss: its
// position is saved.
func (c *orderedChain) quiet() bool {
	return c.held.Len() == 0 && c.gapSince.IsZero() && !c.filling && c.refetchTo == nil
}

// Add takes a validated message and delivers it, and any held messages
// it unblocks, through deliver (called with the Orderer's lock held, in
// chain order). A chain keeps the deliver of its first message.
func (o *Orderer) Add(m *streamr.StreamMessage, encoded []byte, deliver Deliver) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	c, err := o.chain(m, deliver)
	if err != nil || c == nil {
		return err
	}
	o.add(c, streamr.Envelope{Msg: m, Encoded: encoded})
	return nil
}

func (o *Orderer) add(c *orderedChain, e streamr.Envelope) {
	m := e.Msg
	switch {
	case c.last != nil && m.ID.Ref().Compare(*c.last) <= 0:
		o.metrics.stale.Inc()
	case o.follows(c, m):
		o.deliver(c, e)
		o.drain(c)
	default:
		o.hold(c, e)
	}
}

// follows reports whether m comes right after what c delivered: its
// predecessor is the last delivered message, or, for a chain not yet
// delivered from, it has none or one from before the Orderer started.
func (o *Orderer) follows(c *orderedChain, m *streamr.StreamMessage) bool {
	prev := m.PrevMsgRef
	if c.last == nil {
		return prev == nil || (!o.cfg.FromChainStart && prev.Timestamp < o.start)
	}
	return prev == nil || *prev == *c.last
}

func (o *Orderer) deliver(c *orderedChain, e streamr.Envelope) {
	ref := e.Msg.ID.Ref()
	c.deliver(e.Msg, e.Encoded)
	c.last = &ref
	o.dirty[c.key] = streamr.ChainState{ID: c.id, Last: &ref}
	o.metrics.delivered.Inc()
}

// drain delivers held messages that follow on from the last delivered.
func (o *Orderer) drain(c *orderedChain) {
	for c.held.Len() > 0 {
		next := c.held[0].Msg
		switch {
		case c.last != nil && next.ID.Ref().Compare(*c.last) <= 0:
			o.popHeld(c)
			o.metrics.stale.Inc()
		case o.follows(c, next):
			o.deliver(c, o.popHeld(c))
		default:
			return // still a gap before next
		}
	}
	if c.refetchTo != nil && (c.last == nil || c.refetchTo.Compare(*c.last) > 0) {
		o.openGap(c) // messages dropped at the held bound are still to come
		return
	}
	c.refetchTo = nil
	c.gapSince, c.requests = time.Time{}, 0
}

// openGap starts the gap-fill clock for c if it is not running.
func (o *Orderer) openGap(c *orderedChain) {
	if !c.gapSince.IsZero() {
		return
	}
	c.gapSince = o.cfg.Now()
	o.metrics.gaps.Inc()
	o.log.Debug("gap detected", "stream_part", c.part.String(), "chain", c.id, "after", c.last)
	o.poke()
}

func (o *Orderer) hold(c *orderedChain, e streamr.Envelope) {
	m := e.Msg
	for _, h := range c.held {
		if h.Msg.ID.Ref() == m.ID.Ref() {
			o.metrics.stale.Inc()
			return
		}
	}
	heap.Push(&c.held, e)
	o.held++
	o.metrics.held.Inc()
	o.openGap(c)
	if c.held.Len() > o.cfg.MaxHeld || o.held > o.cfg.MaxHeldTotal {
		o.metrics.overflow.Inc()
		if o.cfg.KeepGaps {
			dropped := dropNewest(&c.held)
			o.held--
			if c.refetchTo == nil || dropped.Compare(*c.refetchTo) > 0 {
				c.refetchTo = &dropped
			}
			return
		}
		o.warnOnce("held", "too many messages held behind a gap: giving it up", "stream_part", c.part.String(), "chain", c.id,
			"held", c.held.Len(), "held_total", o.held, "max_held", o.cfg.MaxHeld, "max_held_total", o.cfg.MaxHeldTotal)
		o.skipGap(c)
	}
}

// popHeld removes and returns c's earliest held message.
func (o *Orderer) popHeld(c *orderedChain) streamr.Envelope {
	o.held--
	return heap.Pop(&c.held).(streamr.Envelope)
}

// skipGap gives up the gap before the first held message (the SDK's
// "light" strategy) and delivers what follows. Without held messages it
// gives up the messages dropped at the held bound (refetchTo).
func (o *Orderer) skipGap(c *orderedChain) {
	if c.held.Len() == 0 {
		if c.refetchTo != nil {
			o.metrics.lost.Inc()
			skipped := *c.refetchTo
			c.last, c.refetchTo = &skipped, nil
			o.dirty[c.key] = streamr.ChainState{ID: c.id, Last: &skipped}
		}
		c.gapSince, c.requests = time.Time{}, 0
		return
	}
	o.metrics.lost.Inc()
	next := c.held[0].Msg
	if next.PrevMsgRef != nil {
		skipped := *next.PrevMsgRef
		c.last = &skipped
	} else {
		c.last = nil
	}
	o.drain(c)
}

// chain returns m's chain, loading its position for a chain not in
// memory. It returns nil (and counts why) when m may not take a chain up:
// too old for a chain without a position, or over a chain limit.
func (o *Orderer) chain(m *streamr.StreamMessage, deliver Deliver) (*orderedChain, error) {
	o.keyBuf = streamr.AppendPositionKey(o.keyBuf[:0], o.cfg.Name, &m.ID)
	now := o.cfg.Now()
	if c := o.chains.byKey[string(o.keyBuf)]; c != nil { // no allocation per message
		o.chains.touch(c, now)
		return c, nil
	}
	key := string(o.keyBuf)
	c := &orderedChain{key: key, part: m.ID.StreamPart(), pub: m.ID.PublisherID, id: m.ID.MsgChainID, deliver: deliver}
	// The limits first: a flood of new chains at a limit costs no position read.
	if limit := o.makeRoom(m.ID.PublisherHex()); limit != "" {
		o.metrics.refused.WithLabelValues(limit).Inc()
		o.warnOnce("refused_"+limit, "chain limit reached: message of a new chain dropped", "limit", limit,
			"stream_part", c.part.String(), "publisher", m.ID.PublisherHex(), "chains", len(o.chains.byKey),
			"max_chains", o.cfg.MaxChains, "max_chains_per_publisher", o.cfg.MaxChainsPerPublisher)
		return nil, nil
	}
	last, err := o.position(key)
	if err != nil {
		return nil, fmt.Errorf("load delivered position of %s chain %s: %w", c.part, c.id, err)
	}
	c.last = last
	if last == nil && !o.live(m, now) {
		o.metrics.notLive.Inc()
		o.warnOnce("not_live", "message from before this subscriber started, too old to take up a chain not seen before: dropped", "stream_part", c.part.String(),
			"publisher", m.ID.PublisherHex(), "chain", c.id, "age", now.Sub(time.UnixMilli(m.ID.Timestamp)).Round(time.Second).String(),
			"live_max_age", o.cfg.LiveMaxAge.String())
		return nil, nil
	}
	o.chains.add(c, m.ID.PublisherHex(), now)
	return c, nil
}

// position is key's last delivered position: one not yet flushed, else
// the saved one (nil: none).
func (o *Orderer) position(key string) (*streamr.MessageRef, error) {
	if st, ok := o.dirty[key]; ok && st.Last != nil {
		last := *st.Last
		return &last, nil
	}
	st, ok, err := o.cfg.Positions.ChainState(key)
	if err != nil || !ok || st.Last == nil {
		return nil, err
	}
	last := *st.Last
	return &last, nil
}

// live reports whether m, the first message seen of a chain without a
// position, may take the chain up: it was published since the Orderer
// started (less the clock-skew margin), so this subscriber is owed it, or
// it is at most LiveMaxAge old.
func (o *Orderer) live(m *streamr.StreamMessage, now time.Time) bool {
	if o.cfg.FromChainStart || o.cfg.LiveMaxAge < 0 || m.ID.Timestamp >= o.start {
		return true
	}
	return now.Sub(time.UnixMilli(m.ID.Timestamp)) <= o.cfg.LiveMaxAge
}

// IsHistory reports whether m, being delivered now, is older than
// LiveMaxAge: caught up after an outage or a late start rather than live.
func (o *Orderer) IsHistory(m *streamr.StreamMessage) bool {
	return o.cfg.LiveMaxAge > 0 && o.cfg.Now().Sub(time.UnixMilli(m.ID.Timestamp)) > o.cfg.LiveMaxAge
}

// makeRoom evicts a chain without an open gap if publisher, or all
// publishers together, are at their chain limit; it returns the limit
// that could not be made room under, or "".
func (o *Orderer) makeRoom(publisher string) string {
	if l := o.chains.byPub[publisher]; l != nil && l.Len() >= o.cfg.MaxChainsPerPublisher {
		if !o.evictIdle(l) {
			return "publisher"
		}
	}
	if o.chains.lru.Len() >= o.cfg.MaxChains && !o.evictIdle(o.chains.lru) {
		return "total"
	}
	return ""
}

// evictScan bounds how many chains a new one looks through for one to
// evict, so that a flood of new chains at the limit costs little each.
const evictScan = 64

// evictIdle drops the least recently active chain of l that has no open
// gap. Its position is saved (or about to be, in dirty), so the chain
// continues where it was if it comes back.
func (o *Orderer) evictIdle(l *list.List) bool {
	n := 0
	for e := l.Front(); e != nil && n < evictScan; e, n = e.Next(), n+1 {
		if c := e.Value.(*orderedChain); c.quiet() {
			o.chains.remove(c)
			o.metrics.evicted.Inc()
			return true
		}
	}
	return false
}

// pruneIdle drops chains without messages for IdleTimeout and without an
// open gap.
func (o *Orderer) pruneIdle(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for e := o.chains.lru.Front(); e != nil; {
		c := e.Value.(*orderedChain)
		e = e.Next()
		if now.Sub(c.active) < o.cfg.IdleTimeout {
			return
		}
		if c.quiet() {
			o.chains.remove(c)
			o.metrics.pruned.Inc()
		}
	}
}

// PositionKey is the key under which m's chain's delivered position is saved.
func (o *Orderer) PositionKey(m *streamr.StreamMessage) string { return o.positionKey(m) }

func (o *Orderer) positionKey(m *streamr.StreamMessage) string {
	return streamr.PositionKey(o.cfg.Name, &m.ID)
}

// Run saves delivered positions every FlushInterval and fills gaps, until
// ctx is done; it saves once more on the way out.
func (o *Orderer) Run(ctx context.Context) error {
	t := time.NewTicker(o.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.fills.Wait()
			return o.flush(context.WithoutCancel(ctx))
		case <-t.C:
		case <-o.wake:
		}
		o.step(ctx)
	}
}

// step is one round of Run: save positions, drop idle chains, send the
// resend requests due.
func (o *Orderer) step(ctx context.Context) {
	if err := o.flush(ctx); err != nil {
		o.warnOnce("flush", "save delivered positions", "err", err)
	}
	o.pruneIdle(o.cfg.Now())
	o.fillGaps(ctx)
}

func (o *Orderer) flush(ctx context.Context) error {
	o.mu.Lock()
	dirty := o.dirty
	o.dirty = make(map[string]streamr.ChainState)
	o.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	return o.cfg.Positions.SaveChainStates(ctx, dirty)
}

// gapRequest is one resend due now: for the gaps of one or more chains
// of one publisher in one stream partition, or a tail probe of one chain.
type gapRequest struct {
	chains []*orderedChain
	q      streamr.ResendQuery
	probe  bool
}

// publisherPart is one publisher (hex) in one stream partition: the
// chains a range query without a chain ID spans.
type publisherPart struct {
	part streamr.StreamPartID
	pub  string
}

// fillGaps sends the resend requests that are due, and gives up gaps
// whose requests are exhausted. Each gap is asked for on its own chain
// (per-chain range: only what is missing), except when every chain of a
// publisher in a partition has one, as after an outage or in a backlog:
// their messages are interleaved in the publisher's store, so one range
// without a chain ID serves all of them in a single pass over it, and
// nothing in it is already held by a chain without a gap. Tail probes
// take the request slots gaps leave free.
func (o *Orderer) fillGaps(ctx context.Context) {
	now := o.cfg.Now()
	o.mu.Lock()
	due := make(map[publisherPart][]*orderedChain)
	tracked := make(map[publisherPart]int)
	var probes []*gapRequest
	for _, c := range o.chains.byKey {
		key := publisherPart{c.part, c.publisher}
		tracked[key]++
		switch {
		case o.gapDue(c, now):
			due[key] = append(due[key], c)
		case o.probeDue(c, now):
			probes = append(probes, &gapRequest{chains: []*orderedChain{c}, probe: true})
		}
	}
	var reqs []*gapRequest
	for key, chains := range due {
		if len(chains) > 1 && len(chains) == tracked[key] {
			reqs = append(reqs, &gapRequest{chains: chains})
			continue
		}
		for _, c := range chains {
			reqs = append(reqs, &gapRequest{chains: []*orderedChain{c}})
		}
	}
	reqs = append(reqs, probes...)
	reqs = reqs[:min(len(reqs), max(o.cfg.MaxFills-o.filling, 0))] // the rest wait for a request to finish
	for _, g := range reqs {
		o.startRequest(g, now)
	}
	o.filling += len(reqs)
	o.mu.Unlock()
	for _, g := range reqs {
		o.fills.Go(func() { o.fill(ctx, g) })
	}
}

// startRequest marks g's chains as being filled and builds its query.
func (o *Orderer) startRequest(g *gapRequest, now time.Time) {
	for _, c := range g.chains {
		c.filling = true
		if g.probe {
			c.lastProbe, c.probing = now, o.cfg.LastLoss(c.part)
			continue
		}
		c.requests++
		c.lastRequest = now
	}
	if g.probe {
		g.q = o.probeQuery(g.chains[0])
		o.metrics.probes.Inc()
		return
	}
	g.q = o.groupQuery(g.chains)
}

// gapDue reports whether c's gap should be asked for now; it gives up the
// gap if its requests are exhausted.
func (o *Orderer) gapDue(c *orderedChain, now time.Time) bool {
	if c.gapSince.IsZero() || c.filling || now.Before(o.fillDue(c)) {
		return false
	}
	if c.requests >= o.cfg.MaxGapRequests || o.cfg.Resender == nil {
		o.warnOnce("skip", "gap not filled: skipping it", "stream_part", c.part.String(), "chain", c.id, "after", c.last, "requests", c.requests)
		o.skipGap(c)
		return false
	}
	return c.requests == 0 || now.Sub(c.lastRequest) >= o.cfg.RetryInterval
}

// fillDue is when c's open gap is first asked for.
func (o *Orderer) fillDue(c *orderedChain) time.Time {
	newestMissing := c.refetchTo
	if c.held.Len() > 0 {
		newestMissing = c.held[0].Msg.PrevMsgRef
	}
	wait := o.cfg.GapFillTimeout
	if newestMissing != nil && o.cfg.Now().Sub(time.UnixMilli(newestMissing.Timestamp)) > wait || o.lossBefore(c) {
		wait = min(wait, overdueWait)
	}
	return c.gapSince.Add(wait)
}

// lossBefore reports whether the overlay lost messages of c's partition
// shortly before (or since) c's gap opened: the gap is that loss.
func (o *Orderer) lossBefore(c *orderedChain) bool {
	if o.cfg.LastLoss == nil {
		return false
	}
	lost := o.cfg.LastLoss(c.part)
	return !lost.IsZero() && !lost.Before(c.gapSince.Add(-o.cfg.GapFillTimeout))
}

// Tail probes. A gap shows only when a later message of its chain
// arrives, so a loss that took a chain's last messages (its publisher
// went quiet after them) is never seen as one. After the overlay lost
// gossip of a partition (LastLoss), each chain of it that has gone quiet
// — nothing open, no message for tailQuiet, while still-queued messages
// would keep arriving — is asked once for whatever follows its last
// delivered message: an open-ended range, answered by the publisher or a
// storage node with what it holds (nothing, if the chain ended there).
// A full page is followed at once by the next; a chain is probed at most
// once per RetryInterval otherwise, and a failed probe is retried
// MaxGapRequests times before that loss is given up for the chain.
// Chains that keep publishing are never quiet: their losses show as gaps.
func (o *Orderer) probeDue(c *orderedChain, now time.Time) bool {
	if o.cfg.LastLoss == nil || o.cfg.Resender == nil || !c.quiet() || c.last == nil {
		return false
	}
	lost := o.cfg.LastLoss(c.part)
	quiet := o.tailQuiet()
	switch {
	case lost.IsZero() || !lost.After(c.probedLoss):
		return false // no loss, or this one was probed for
	case now.Sub(lost) < quiet || now.Sub(c.active) < quiet:
		return false // messages queued at the loss may still come
	case !c.lastProbe.IsZero() && now.Sub(c.lastProbe) < o.cfg.RetryInterval:
		return false
	}
	return true
}

// tailQuiet is how long a chain must be silent before a tail probe: the
// reordering window, at most a second.
func (o *Orderer) tailQuiet() time.Duration { return min(o.cfg.GapFillTimeout, time.Second) }

// probeQuery asks for c's messages after its last delivered one.
func (o *Orderer) probeQuery(c *orderedChain) streamr.ResendQuery {
	return streamr.ResendQuery{Part: c.part, Publisher: c.pub, ChainID: c.id, Limit: fillPage,
		From: streamr.MessageRef{Timestamp: c.last.Timestamp, SequenceNumber: c.last.SequenceNumber + 1}}
}

// probed records the answer to c's tail probe (under mu).
func (o *Orderer) probed(c *orderedChain, got int, err error) {
	switch {
	case err != nil:
		if c.probeFails++; c.probeFails < o.cfg.MaxGapRequests {
			return // asked again after RetryInterval
		}
		o.warnOnce("probe", "tail probe failed on every attempt: giving it up", "stream_part", c.part.String(),
			"chain", c.id, "after", c.last, "attempts", c.probeFails, "err", err)
	case got >= fillPage:
		c.lastProbe = time.Time{} // a full page: ask for the next at once
		return
	}
	c.probedLoss, c.probeFails = c.probing, 0
}

// groupQuery spans the gaps of chains (one publisher, one partition).
func (o *Orderer) groupQuery(chains []*orderedChain) streamr.ResendQuery {
	q := o.gapQuery(chains[0])
	for _, c := range chains[1:] {
		cq := o.gapQuery(c)
		if cq.From.Compare(q.From) < 0 {
			q.From = cq.From
		}
		if cq.UpperBound().Compare(q.UpperBound()) > 0 {
			q.To = cq.To // a zero To is no bound
		}
		q.ChainID = ""
	}
	return q
}

// gapQuery asks for the messages after the last delivered one up to the
// first held message's predecessor, as the SDK's gap fill does.
func (o *Orderer) gapQuery(c *orderedChain) streamr.ResendQuery {
	q := streamr.ResendQuery{Part: c.part, Publisher: c.pub, ChainID: c.id, From: streamr.MessageRef{Timestamp: o.start}, Limit: fillPage}
	if o.cfg.FromChainStart {
		q.From = streamr.MessageRef{}
	}
	if c.held.Len() > 0 {
		q.To = *c.held[0].Msg.PrevMsgRef
	} else {
		q.To = *c.refetchTo
	}
	if c.last != nil {
		q.From = streamr.MessageRef{Timestamp: c.last.Timestamp, SequenceNumber: c.last.SequenceNumber + 1}
	}
	return q
}

func (o *Orderer) fill(ctx context.Context, g *gapRequest) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.RetryInterval)
	defer cancel()
	msgs, err := o.cfg.Resender.Resend(ctx, g.q)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.filling--
	o.poke() // a request slot is free
	before := make(map[*orderedChain]*streamr.MessageRef, len(g.chains))
	for _, c := range g.chains {
		c.filling = false
		before[c] = c.last
	}
	if g.probe {
		o.probed(g.chains[0], len(msgs), err)
	}
	if err != nil {
		o.infoOnce("fill_failed", "gap fill request failed", "stream_part", g.q.Part.String(), "chains", len(g.chains),
			"attempt", g.chains[0].requests, "probe", g.probe, "err", err)
		return
	}
	for _, e := range msgs {
		if c := o.chains.byKey[o.positionKey(e.Msg)]; c != nil && string(c.pub) == string(e.Msg.ID.PublisherID) {
			o.metrics.filled.Inc()
			o.add(c, e)
		}
	}
	for c, prev := range before {
		if !c.gapSince.IsZero() && c.last != nil && (prev == nil || c.last.Compare(*prev) > 0) {
			// Progress, and more to come: ask for the next page at once.
			c.requests, c.lastRequest = 0, time.Time{}
			c.gapSince = o.cfg.Now().Add(-o.cfg.GapFillTimeout)
		}
	}
}

// poke wakes Run to send due requests.
func (o *Orderer) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// dropNewest removes the latest held message and returns its reference.
func dropNewest(h *msgHeap) streamr.MessageRef {
	newest := 0
	for i := range *h {
		if (*h)[i].Msg.ID.Ref().Compare((*h)[newest].Msg.ID.Ref()) > 0 {
			newest = i
		}
	}
	return heap.Remove(h, newest).(streamr.Envelope).Msg.ID.Ref()
}

// msgHeap orders held messages by (timestamp, sequence number).
type msgHeap []streamr.Envelope

func (h msgHeap) Len() int           { return len(h) }
func (h msgHeap) Less(i, j int) bool { return h[i].Msg.ID.Ref().Compare(h[j].Msg.ID.Ref()) < 0 }
func (h msgHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *msgHeap) Push(x any)        { *h = append(*h, x.(streamr.Envelope)) }
func (h *msgHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	*h = old[:len(old)-1]
	return m
}
