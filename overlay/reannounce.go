package overlay

import (
	"context"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/tributary-iot/tributary/streamr"
)

// Re-announcing chain tips lost on the way out (see the package doc's flow
// control). A receiver learns of a lost message only from a later
// message's prevMsgRef, so a chain's last message, lost while its
// publisher then goes quiet, is never asked for. Losses the receiver
// knows of are its own to fill (Node.LastLoss); those at our full queue
// to a peer only this node sees (the tracer's DropRPC). Each partition
// keeps the newest message of each chain it published or accepted and,
// once its losses have ended, publishes again those that were newest
// while it lost messages.
const (
	// DefaultReannounceChains is how many chains' newest messages a
	// partition keeps (Config.ReannounceChains): far more than the
	// publishers a partition of sensor gateways carries, yet a bound a
	// flood of new chains cannot pass (the least recently updated goes).
	DefaultReannounceChains = 2048

	// reannounceMargin is how long after the seen TTL a send loss must
	// lie before the tips are published again: by then receivers that
	// have the message drop the copy as stale by chain position, not as
	// a duplicate of an ID still within their seen TTL.
	reannounceMargin = time.Second
	// lossSlack widens the window of tips taken backwards: a message is
	// stored as its chain's tip when validated and sent a moment later,
	// once pubsub's event loop gets to it.
	lossSlack = 2 * time.Second
	// seenSweep is how often pubsub sweeps expired IDs from its caches
	// (go-libp2p-pubsub timecache, backgroundSweepInterval): a message
	// this node delivered stays "delivered" up to this long after the seen
	// TTL, and a Publish of it meanwhile is silently a no-op. A tip
	// refused so is tried again until then.
	seenSweep = time.Minute
	// reannounceRetry is how often a refused tip is tried again.
	reannounceRetry = 5 * time.Second
)

// chainTip is the newest message of one (publisher, chain) a partition
// has sent, kept in a list by the time it was last updated.
type chainTip struct {
	key        string
	data       []byte // encoded, as gossiped
	ts         int64
	seq        int32
	at         int64 // when stored (UnixNano)
	prev, next *chainTip
}

// tipStore keeps the newest message of up to limit chains. note runs on
// the validator path for every message accepted or published, and for a
// chain it already holds it does not allocate.
type tipStore struct {
	mu         sync.Mutex
	limit      int
	tips       map[string]*chainTip
	head, tail *chainTip // most and least recently updated
}

func newTipStore(limit int) *tipStore {
	return &tipStore{limit: limit, tips: make(map[string]*chainTip)}
}

// tipKeyBuf is stack room for a chain key: a length byte, the publisher
// (20 bytes, or 65 for a P-256 key) and the chain ID (20 characters).
const tipKeyBuf = 128

// note records data, the encoded m, as its chain's tip at now unless the
// chain holds a newer message.
func (s *tipStore) note(m *streamr.StreamMessage, data []byte, now int64) {
	if s == nil {
		return
	}
	var buf [tipKeyBuf]byte
	k := append(buf[:0], byte(len(m.ID.PublisherID)))
	k = append(k, m.ID.PublisherID...)
	k = append(k, m.ID.MsgChainID...)
	ts, seq := m.ID.Timestamp, m.ID.SequenceNumber
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tips[string(k)] // no allocation: the conversion is only a lookup
	switch {
	case t == nil:
		t = &chainTip{key: string(k)}
		s.tips[t.key] = t
		if len(s.tips) > s.limit {
			s.evict()
		}
	case ts < t.ts || ts == t.ts && seq < t.seq:
		return // an older message validated late: the chain's tip stays
	default:
		s.unlink(t)
	}
	t.data, t.ts, t.seq, t.at = data, ts, seq, now
	s.pushFront(t)
}

// since returns the tips stored from from to to (UnixNano), inclusive.
func (s *tipStore) since(from, to int64) []*chainTip {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*chainTip
	for t := s.head; t != nil && t.at >= from; t = t.next {
		if t.at <= to {
			out = append(out, &chainTip{key: t.key, data: t.data, ts: t.ts, seq: t.seq, at: t.at})
		}
	}
	return out
}

// storedAt returns when key's tip was stored and its position; ok false
// if the chain is no longer held.
func (s *tipStore) storedAt(key string) (at, ts int64, seq int32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tips[key]
	if t == nil {
		return 0, 0, 0, false
	}
	return t.at, t.ts, t.seq, true
}

func (s *tipStore) evict() {
	t := s.tail
	s.unlink(t)
	delete(s.tips, t.key)
}

func (s *tipStore) unlink(t *chainTip) {
	if t.prev != nil {
		t.prev.next = t.next
	} else if s.head == t {
		s.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else if s.tail == t {
		s.tail = t.prev
	}
	t.prev, t.next = nil, nil
}

func (s *tipStore) pushFront(t *chainTip) {
	t.next = s.head
	if s.head != nil {
		s.head.prev = t
	}
	s.head = t
	if s.tail == nil {
		s.tail = t
	}
}

// sendLosses is the open episode of messages of a partition dropped at
// full queues to peers: from its first drop to its last (UnixNano).
type sendLosses struct {
	mu          sync.Mutex
	first, last int64
}

// note records a drop at now. It runs on pubsub's event loop.
func (l *sendLosses) note(now int64) {
	l.mu.Lock()
	if l.first == 0 {
		l.first = now
	}
	l.last = now
	l.mu.Unlock()
}

// endedBefore closes and returns the episode if its last drop is before
// quietSince; ok false if there is none or it goes on.
func (l *sendLosses) endedBefore(quietSince int64) (first, last int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.first == 0 || l.last >= quietSince {
		return 0, 0, false
	}
	first, last = l.first, l.last
	l.first, l.last = 0, 0
	return first, last, true
}

// reannouncer is a partition's loop state: the tips of ended loss
// episodes not yet published again. Only checkPeers' goroutine uses it.
type reannouncer struct {
	pending  map[string]pendingTip
	loggedAt time.Time
}

type pendingTip struct {
	tip      *chainTip
	giveUpAt time.Time // when pubsub's sweep must have forgotten it: no more tries
	nextTry  time.Time
}

// reannouncement is the ValidatorData of a re-published tip: the
// validator (validate, local path) marks it sent, which pubsub skips for a
// message it still holds as delivered.
type reannouncement struct {
	m    *streamr.StreamMessage
	data []byte // m encoded; the gossip message is a bundle of it alone
	sent bool
}

// reannounce publishes again the tips of a loss episode that ended more
// than the seen TTL ago, and retries those pubsub refused.
func (p *Partition) reannounce(ctx context.Context, now time.Time) {
	if p.tips == nil {
		return
	}
	r := &p.again
	ttl := p.node.cfg.SeenTTL
	if first, last, ok := p.sendLoss.endedBefore(now.Add(-ttl - reannounceMargin).UnixNano()); ok {
		if r.pending == nil {
			r.pending = make(map[string]pendingTip)
		}
		for _, t := range p.tips.since(first-lossSlack.Nanoseconds(), last) {
			r.pending[t.key] = pendingTip{tip: t, giveUpAt: time.Unix(0, last).Add(ttl + seenSweep + reannounceRetry)}
		}
	}
	var batch pubsub.MessageBatch
	var sent []*reannouncement
	var keys []string
	for key, pt := range r.pending {
		if now.Before(pt.nextTry) {
			continue
		}
		if at, ts, seq, ok := p.tips.storedAt(key); !ok || at > pt.tip.at || ts != pt.tip.ts || seq != pt.tip.seq {
			delete(r.pending, key) // forgotten, or sent again since: that send is watched itself
			continue
		}
		m, err := streamr.Unmarshal(pt.tip.data)
		if err != nil {
			delete(r.pending, key) // unreachable: validated when stored
			continue
		}
		data, err := encodeBundle([][]byte{pt.tip.data})
		if err != nil {
			delete(r.pending, key) // unreachable: a bundle of one encodes
			continue
		}
		ra := &reannouncement{m: m, data: pt.tip.data}
		if err := p.t.AddToBatch(ctx, &batch, data, pubsub.WithValidatorData(ra)); err != nil {
			p.log.Debug("re-announce failed", "err", err)
			return // topic closed or node stopping
		}
		sent, keys = append(sent, ra), append(keys, key)
	}
	if len(sent) == 0 {
		return
	}
	if err := p.node.ps.PublishBatch(&batch); err != nil {
		p.log.Debug("re-announce failed", "err", err)
		return
	}
	p.settle(now, sent, keys)
}

// settle counts the tips pubsub took and schedules a retry of the others
// (still held as delivered until its next sweep).
func (p *Partition) settle(now time.Time, sent []*reannouncement, keys []string) {
	r := &p.again
	n, refused := 0, 0
	for i, ra := range sent {
		pt := r.pending[keys[i]]
		switch {
		case ra.sent:
			n++
			delete(r.pending, keys[i])
		case now.After(pt.giveUpAt):
			delete(r.pending, keys[i])
		default:
			refused++
			pt.nextTry = now.Add(reannounceRetry)
			r.pending[keys[i]] = pt
		}
	}
	p.m.reannounced.Add(float64(n))
	if n > 0 && now.Sub(r.loggedAt) >= p.node.cfg.LogRepeatInterval {
		r.loggedAt = now
		p.log.Info("re-announced chain tips after messages were dropped at a full send queue to a peer",
			"tips", n, "waiting", refused)
	}
}
