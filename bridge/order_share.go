package bridge

import (
	"container/list"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// FillShare is a Resender shared by the Orderers of one gateway, so that
// a message missing at all of them is fetched once. Every Orderer of a
// stream partition (MQTT delivery, storing) sees the same gossip and so
// the same gaps, and fills each on its own; through a FillShare the first
// request fetches the message over the network and the others take it
// from what that fetch brought, which FillShare keeps for a while
// (validated already: they come from the Resender it wraps).
//
// A chain's messages are kept by their predecessor (prevMsgRef), so a
// request for one chain after its last delivered message is answered by
// following the chain from there, as far as the kept messages reach; only
// the rest of the range is fetched. Requests for one chain (or for all of
// a publisher's, a range without a chain ID) wait while another for the
// same is in flight, then take what it brought.
type FillShare struct {
	r        Resender
	maxBytes int
	keep     time.Duration
	now      func() time.Time
	log      *slog.Logger
	shared   prometheus.Counter
	evicted  prometheus.Counter

	mu      sync.Mutex
	sharers map[streamr.StreamPartID]int                        // orderers filling each partition's gaps
	chains  map[shareChainKey]map[streamr.MessageRef]*sharedMsg // by chain, by predecessor
	order   *list.List                                          // of *sharedMsg, oldest first
	bytes   int
	flights map[shareChainKey]chan struct{} // closed when the fetch ends
	warned  logLimit
}

// FillShareConfig configures a FillShare. Zero values take the defaults.
type FillShareConfig struct {
	MaxBytes   int           // encoded bytes kept for other Orderers (default DefaultFillShareBytes)
	Keep       time.Duration // how long a fetched message is kept for them (default DefaultFillShareKeep)
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time // nil: time.Now
}

// Defaults of a FillShare. The Orderers of a partition ask for one gap
// within a tick or two of each other (100 ms each); what is kept longer
// serves a slower Orderer's later pages of a long fill. The bound holds
// about a page (2,000) of small readings: a gateway's memory limit is
// tight, and a message is dropped as soon as every other Orderer took it.
const (
	DefaultFillShareBytes = 1 << 20
	DefaultFillShareKeep  = 10 * time.Second
)

type shareChainKey struct {
	part  streamr.StreamPartID
	pub   string
	chain string // "": every chain of the publisher (a flight only)
}

type sharedMsg struct {
	key   shareChainKey
	prev  streamr.MessageRef
	env   streamr.Envelope
	at    time.Time
	elem  *list.Element
	takes int // by other orderers; dropped once every one took it
}

// NewFillShare returns a FillShare fetching through r.
func NewFillShare(r Resender, cfg FillShareConfig) *FillShare {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultFillShareBytes
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultFillShareKeep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &FillShare{
		r: r, maxBytes: cfg.MaxBytes, keep: cfg.Keep, now: cfg.Now,
		log: componentLogger(cfg.Logger, "order"),
		shared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_order_fill_shared_total",
			Help: "Messages a gap fill took from another orderer's fetch instead of fetching them again.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_order_fill_share_evicted_total",
			Help: "Fetched messages dropped from the shared fills before their time, at fill_share_bytes.",
		}),
		sharers: make(map[streamr.StreamPartID]int),
		chains:  make(map[shareChainKey]map[streamr.MessageRef]*sharedMsg),
		order:   list.New(),
		flights: make(map[shareChainKey]chan struct{}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.shared, s.evicted)
	}
	return s
}

// Share says that one more Orderer fills the gaps of parts through s.
// Only what a partition with more than one such Orderer fetches is kept.
func (s *FillShare) Share(parts ...streamr.StreamPartID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range parts {
		s.sharers[p]++
	}
}

// Resend implements Resender.
func (s *FillShare) Resend(ctx context.Context, q streamr.ResendQuery) ([]streamr.Envelope, error) {
	s.mu.Lock()
	shared := s.sharers[q.Part] > 1
	s.mu.Unlock()
	if !shared {
		return s.r.Resend(ctx, q) // nobody else needs what this fetches
	}
	key := shareChainKey{part: q.Part, pub: string(q.Publisher), chain: q.ChainID}
	if err := s.await(ctx, key); err != nil {
		return nil, err
	}
	// Under mu, flight registered: another request for key waits for ours.
	kept, rest, done := s.take(q)
	if done {
		s.mu.Unlock()
		s.shared.Add(float64(len(kept)))
		return kept, nil
	}
	flight := make(chan struct{})
	s.flights[key] = flight
	s.mu.Unlock()
	s.shared.Add(float64(len(kept)))

	got, err := s.r.Resend(ctx, rest)
	s.mu.Lock()
	delete(s.flights, key)
	close(flight)
	if err == nil {
		s.add(got)
	}
	s.mu.Unlock()
	if err != nil && len(kept) > 0 {
		return kept, nil // progress: the Orderer asks again for the rest
	}
	return append(kept, got...), err
}

// await returns with mu held once no fetch for key is in flight.
func (s *FillShare) await(ctx context.Context, key shareChainKey) error {
	for {
		s.mu.Lock()
		flight, busy := s.flights[key]
		if !busy {
			return nil
		}
		s.mu.Unlock()
		select {
		case <-flight:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take returns the kept messages that open q's range, in chain order, and
// whether they are all of it; if not, rest is the query for the others.
// It runs under mu.
func (s *FillShare) take(q streamr.ResendQuery) (kept []streamr.Envelope, rest streamr.ResendQuery, done bool) {
	s.expire()
	rest = q
	chain := s.chains[shareChainKey{part: q.Part, pub: string(q.Publisher), chain: q.ChainID}]
	// Only a range of one chain after a known message (the Orderer's last
	// delivered one: From is just after it) can be followed link by link.
	if q.ChainID == "" || len(q.Publisher) == 0 || q.Last > 0 || q.From.SequenceNumber == 0 || len(chain) == 0 {
		return nil, rest, false
	}
	cur := streamr.MessageRef{Timestamp: q.From.Timestamp, SequenceNumber: q.From.SequenceNumber - 1}
	upper := q.UpperBound()
	for q.Limit <= 0 || len(kept) < q.Limit {
		m, ok := chain[cur]
		if !ok {
			rest.From = streamr.MessageRef{Timestamp: cur.Timestamp, SequenceNumber: cur.SequenceNumber + 1}
			if q.Limit > 0 {
				rest.Limit = q.Limit - len(kept)
			}
			return kept, rest, false
		}
		ref := m.env.Msg.ID.Ref()
		if ref.Compare(upper) > 0 {
			return kept, rest, true // the chain has nothing more in the range
		}
		kept = append(kept, m.env)
		if m.takes++; m.takes >= s.sharers[q.Part]-1 {
			s.remove(m) // every other orderer has it
		}
		if ref == upper {
			return kept, rest, true
		}
		cur = ref
	}
	return kept, rest, true // a full page: the Orderer asks for the next
}

// add keeps fetched messages for the other Orderers. It runs under mu.
func (s *FillShare) add(msgs []streamr.Envelope) {
	now := s.now()
	for _, e := range msgs {
		prev := e.Msg.PrevMsgRef
		if prev == nil {
			continue // a chain's first message: never asked for after a known one
		}
		key := shareChainKey{part: e.Msg.ID.StreamPart(), pub: string(e.Msg.ID.PublisherID), chain: e.Msg.ID.MsgChainID}
		chain := s.chains[key]
		if chain == nil {
			chain = make(map[streamr.MessageRef]*sharedMsg)
			s.chains[key] = chain
		}
		if old := chain[*prev]; old != nil { // fetched again: keep the newer copy
			s.order.Remove(old.elem)
			s.bytes -= len(old.env.Encoded)
		}
		m := &sharedMsg{key: key, prev: *prev, env: e, at: now}
		m.elem = s.order.PushBack(m)
		chain[*prev] = m
		s.bytes += len(e.Encoded)
	}
	for s.bytes > s.maxBytes && s.order.Len() > 0 {
		s.remove(s.order.Front().Value.(*sharedMsg))
		s.evicted.Inc()
		s.warnBound()
	}
}

// expire drops what was kept longer than keep. It runs under mu.
func (s *FillShare) expire() {
	limit := s.now().Add(-s.keep)
	for e := s.order.Front(); e != nil && e.Value.(*sharedMsg).at.Before(limit); e = s.order.Front() {
		s.remove(e.Value.(*sharedMsg))
	}
}

func (s *FillShare) remove(m *sharedMsg) {
	s.order.Remove(m.elem)
	s.bytes -= len(m.env.Encoded)
	chain := s.chains[m.key]
	delete(chain, m.prev)
	if len(chain) == 0 {
		delete(s.chains, m.key)
	}
}

// warnBound logs, at most once a minute, that the bound dropped fetched
// messages early: other Orderers then fetch them again.
func (s *FillShare) warnBound() {
	now := s.now()
	if !s.warned.last.IsZero() && now.Sub(s.warned.last) < time.Minute {
		s.warned.suppressed++
		return
	}
	s.log.Warn("shared gap fills hit fill_share_bytes: fetched messages dropped before the other orderers took them",
		"fill_share_bytes", s.maxBytes, "suppressed", s.warned.suppressed)
	s.warned.last, s.warned.suppressed = now, 0
}
