package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
}

// Overlay joins stream partition overlays. deliver receives validated
// messages from other publishers (nil for publish-only joins).
type Overlay interface {
	Join(part streamr.StreamPartID, deliver func(msg *streamr.StreamMessage, encoded []byte)) (Topic, error)
}

// ForwardLog is the signed message log the forwarder reads, and where it
// keeps its positions; storage.Store satisfies it.
type ForwardLog interface {
	After(pos uint64, max int) ([]storage.Logged, error)
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
type Forwarder struct {
	store   ForwardLog
	overlay Overlay
	log     *slog.Logger
	retry   time.Duration
	kick    chan struct{}

	topics map[streamr.StreamPartID]Topic
	sent   map[streamr.StreamPartID]uint64 // last forwarded position per part
	low    uint64                          // every position ≤ low is forwarded
	held   atomic.Bool                     // the last pass held messages back for want of peers
	// settledFrom is when the latest pass began that left nothing to send
	// but messages held back for want of peers (UnixNano).
	settledFrom atomic.Int64

	backlogLen prometheus.Gauge
	skipped    prometheus.Counter
}

// gossipWindow is how far behind the log head, in positions, a message
// may be and still go out by gossip. A burst of this size fits the
// receivers' validation queues (4,096) with room to spare.
const gossipWindow = 1024

// forwardBatch is how many log entries one read takes, and the most
// messages one Publish carries.
const forwardBatch = 512

// NewForwarder returns a forwarder; Run starts it. retry is how often
// partitions without peers are tried again.
func NewForwarder(store ForwardLog, overlay Overlay, retry time.Duration, reg prometheus.Registerer, log *slog.Logger) *Forwarder {
	f := &Forwarder{
		store: store, overlay: overlay, log: componentLogger(log, "forwarder"), retry: retry,
		kick:   make(chan struct{}, 1),
		topics: make(map[streamr.StreamPartID]Topic),
		sent:   make(map[streamr.StreamPartID]uint64),
		backlogLen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_forward_backlog_messages", Help: "Signed messages not yet forwarded into the overlay.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_forward_pulled_total",
			Help: "Backlog messages not gossiped but left for receivers to fetch by resend (each chain's newest is gossiped).",
		}),
	}
	if reg != nil {
		reg.MustRegister(f.backlogLen, f.skipped)
	}
	return f
}

// HoldingBack reports whether messages are waiting in storage for peers.
func (f *Forwarder) HoldingBack() bool { return f.held.Load() }

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
	low, err := f.store.Cursor(lowCursor)
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	f.low = low
	ticker := time.NewTicker(f.retry)
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

const lowCursor = "forward/low"

func partCursor(part streamr.StreamPartID) string { return "forward/part/" + part.String() }

// maxScan bounds how far one pass reads, so positions are saved and the
// tips of a long backlog go out as the scan proceeds.
const maxScan = 64 * forwardBatch

// pass forwards from the low-water mark, skipping the partitions that
// have no peers. It reports whether it stopped at maxScan with nothing
// held back, so more may follow at once.
func (f *Forwarder) pass(ctx context.Context) (bool, error) {
	head := f.store.LastPos()
	f.backlogLen.Set(float64(head - min(f.low, head)))
	ps := &passState{f: f, cutoff: head - min(head, gossipWindow), parts: make(map[streamr.StreamPartID]*partPass), dirty: make(map[string]uint64)}
	pos, scanned := f.low, 0
	for scanned < maxScan && ctx.Err() == nil {
		entries, err := f.store.After(pos, forwardBatch)
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
		ps.dirty[lowCursor] = newLow
	}
	if len(ps.dirty) > 0 {
		// Saved even when ctx ended mid-pass: what went out must not go
		// out again after a restart.
		if err := f.store.SetCursors(context.WithoutCancel(ctx), ps.dirty); err != nil {
			return false, fmt.Errorf("save forwarding positions: %w", err)
		}
	}
	f.low = newLow
	f.held.Store(ps.anyBlocked)
	f.backlogLen.Set(float64(head - min(newLow, head)))
	return scanned >= maxScan && !ps.anyBlocked, nil
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
		if n, err := ps.f.publish(ctx, id, tips); n < len(tips) {
			ps.f.logPublishError(id, err)
			ps.block(pp, pp.skipFirst)
			return
		}
		ps.f.skipped.Add(float64(pp.skipped - len(tips)))
		ps.f.sent[id] = pp.skipLast
		ps.dirty[partCursor(id)] = pp.skipLast
		pp.tips, pp.skipFirst, pp.skipped = make(map[string]storage.Logged), 0, 0
	}
	if len(pp.live) == 0 {
		return
	}
	n, err := ps.f.publish(ctx, id, pp.live)
	if n > 0 {
		last := pp.live[n-1].Pos
		ps.f.sent[id] = last
		ps.dirty[partCursor(id)] = last
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
func (f *Forwarder) publish(ctx context.Context, part streamr.StreamPartID, entries []storage.Logged) (int, error) {
	topic, err := f.topic(part)
	if err != nil {
		return 0, err
	}
	encoded := make([][]byte, len(entries))
	for i, e := range entries {
		encoded[i] = e.Encoded
	}
	return topic.Publish(ctx, encoded)
}

func (f *Forwarder) logPublishError(part streamr.StreamPartID, err error) {
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
	pos, err := f.store.Cursor(partCursor(part))
	if err != nil {
		return 0, err
	}
	f.sent[part] = pos
	return pos, nil
}

func (f *Forwarder) topic(part streamr.StreamPartID) (Topic, error) {
	if t, ok := f.topics[part]; ok {
		return t, nil
	}
	t, err := f.overlay.Join(part, nil)
	if err != nil {
		return nil, fmt.Errorf("join overlay of %s: %w", part, err)
	}
	f.topics[part] = t
	f.log.Info("forwarding into overlay", "stream_part", part.String())
	return t, nil
}
