package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// ErrNoPeers is what a Topic's Publish wraps when nobody would receive
// the message; the forwarder keeps such messages and retries.
var ErrNoPeers = errors.New("no peers in the stream partition's overlay")

// Topic is one stream partition's overlay as the bridge uses it.
type Topic interface {
	Publish(ctx context.Context, encoded []byte) error
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
type Forwarder struct {
	log     ForwardLog
	overlay Overlay
	logger  *slog.Logger
	retry   time.Duration
	kick    chan struct{}

	topics map[streamr.StreamPartID]Topic
	sent   map[streamr.StreamPartID]uint64 // last forwarded position per part
	low    uint64                          // every position ≤ low is forwarded
	held   atomic.Bool                     // the last pass held messages back for want of peers
	// settledFrom is when the latest pass began that left nothing to send
	// but messages held back for want of peers (UnixNano).
	settledFrom atomic.Int64

	// The live lane: while a backlog from before position liveFrom is
	// replayed, newer messages of chains that have no backlog go out at
	// once instead of queueing behind it. Chains with a backlog keep their
	// order: their newer messages wait for the replay.
	live       *liveLane
	liveSent   map[uint64]struct{} // positions the live lane sent that the main lane has not passed yet
	backlogLen prometheus.Gauge
}

type liveLane struct {
	from       uint64                      // log head when the backlog was found
	next       uint64                      // live lane scan position
	backlogged map[string]bool             // chains (part + chain ID) with large backlogs: their messages wait for the main lane
	waiting    map[string][]storage.Logged // per chain, live messages not sent yet (no peers yet), in order
	started    time.Time
}

// liveThreshold is the backlog, in messages, from which the live lane opens.
const liveThreshold = forwardBatch

// forwardBatch is how many log entries one pass reads.
const forwardBatch = 512

// NewForwarder returns a forwarder; Run starts it. retry is how often
// partitions without peers are tried again.
func NewForwarder(log ForwardLog, overlay Overlay, retry time.Duration, reg prometheus.Registerer, logger *slog.Logger) *Forwarder {
	f := &Forwarder{
		log: log, overlay: overlay, logger: logger, retry: retry,
		kick:     make(chan struct{}, 1),
		topics:   make(map[streamr.StreamPartID]Topic),
		sent:     make(map[streamr.StreamPartID]uint64),
		liveSent: make(map[uint64]struct{}),
		backlogLen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_forward_backlog_messages", Help: "Signed messages not yet forwarded into the overlay.",
		}),
	}
	if reg != nil {
		reg.MustRegister(f.backlogLen)
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
	low, err := f.log.Cursor(lowCursor)
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
			f.logger.Warn("forwarding failed; retrying", "err", err)
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

// maxScan bounds how far one pass reads past a partition that is held
// back, so the partitions behind it still get their messages out.
const maxScan = 64 * forwardBatch

// pass forwards from the low-water mark, skipping the partitions that
// have no peers. It reports whether it stopped at maxScan with nothing
// held back, so more may follow at once.
func (f *Forwarder) pass(ctx context.Context) (bool, error) {
	blocked := make(map[streamr.StreamPartID]bool)
	dirty := make(map[string]uint64)
	newLow, lowFixed := f.low, false
	pos, scanned := f.low, 0
	for scanned < maxScan && ctx.Err() == nil {
		// The live lane opens only once this pass has reached peers.
		f.liveTurn(ctx, newLow, newLow > f.low && len(blocked) == 0)
		entries, err := f.log.After(pos, forwardBatch)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			if ctx.Err() != nil {
				break
			}
			if f.sentLive(e.Pos) || (!blocked[e.Part] && f.forward(ctx, e, dirty)) {
				if !lowFixed {
					newLow = e.Pos
				}
			} else {
				blocked[e.Part] = true
				lowFixed = true // the low-water mark cannot pass a held message
			}
			pos = e.Pos
		}
		scanned += len(entries)
		if len(entries) < forwardBatch {
			break
		}
	}
	if newLow != f.low {
		dirty[lowCursor] = newLow
	}
	if len(dirty) > 0 {
		// Saved even when ctx ended mid-pass: what went out must not go
		// out again after a restart.
		if err := f.log.SetCursors(context.WithoutCancel(ctx), dirty); err != nil {
			return false, fmt.Errorf("save forwarding positions: %w", err)
		}
	}
	f.low = newLow
	f.held.Store(len(blocked) > 0)
	f.liveTurn(ctx, newLow, newLow > f.low && len(blocked) == 0)
	return scanned >= maxScan && len(blocked) == 0, nil
}

// sentLive reports whether the live lane already sent pos, forgetting it
// once the main lane has passed it.
func (f *Forwarder) sentLive(pos uint64) bool {
	_, ok := f.liveSent[pos]
	delete(f.liveSent, pos)
	return ok
}

// liveTurn gives the live lane a turn before each batch of the main lane,
// whose low-water mark is low. The lane opens when the main lane is
// replaying a backlog with the overlay reachable (canOpen: nothing held
// back for want of peers), and closes once the main lane has caught up.
func (f *Forwarder) liveTurn(ctx context.Context, low uint64, canOpen bool) {
	head := f.log.LastPos()
	f.backlogLen.Set(float64(head - min(low, head)))
	switch {
	case f.live != nil && low >= f.live.from:
		f.logger.Info("backlog replayed", "took", time.Since(f.live.started).Round(time.Millisecond))
		f.live = nil
	case f.live == nil && canOpen && head > low+liveThreshold:
		f.openLive(low, head)
	}
	if f.live != nil {
		f.runLive(ctx)
	}
}

// smallBacklog is the most messages a chain may have waiting for it to
// count as live: such a chain catches up through the live lane at once
// instead of waiting for the large backlogs of others to be replayed.
const smallBacklog = 256

func (f *Forwarder) openLive(low, head uint64) {
	lane := &liveLane{from: head, next: head, backlogged: make(map[string]bool), waiting: make(map[string][]storage.Logged), started: time.Now()}
	for pos := low; pos < head; {
		entries, err := f.log.After(pos, forwardBatch)
		if err != nil || len(entries) == 0 {
			break
		}
		for _, e := range entries {
			if e.Pos > head {
				break
			}
			if _, sent := f.liveSent[e.Pos]; sent {
				continue
			}
			if upTo, err := f.sentUpTo(e.Part); err == nil && e.Pos <= upTo {
				continue // went out before
			}
			key := laneKey(e)
			switch {
			case lane.backlogged[key]:
			case len(lane.waiting[key]) == smallBacklog:
				lane.backlogged[key] = true
				delete(lane.waiting, key)
			default:
				lane.waiting[key] = append(lane.waiting[key], e)
			}
		}
		pos = entries[len(entries)-1].Pos
	}
	f.live = lane
	f.logger.Info("replaying backlog; chains with small backlogs and newer ones go out meanwhile",
		"backlog", head-low, "large_backlogs", len(lane.backlogged), "small_backlogs", len(lane.waiting))
}

// liveBatches bounds one turn of the live lane, so it cannot starve the
// main lane either.
const liveBatches = 4

// runLive forwards what arrived after the backlog, for chains without one.
// A message that cannot go out yet (its partition's overlay has no peers
// yet) waits in the lane with the rest of its chain, so chains stay in order.
func (f *Forwarder) runLive(ctx context.Context) {
	lane := f.live
	f.retryWaiting(ctx, lane)
	for range liveBatches {
		entries, err := f.log.After(lane.next, forwardBatch)
		if err != nil || len(entries) == 0 {
			return
		}
		for _, e := range entries {
			key := laneKey(e)
			switch {
			case lane.backlogged[key]:
			case len(lane.waiting[key]) > 0 || !f.publishLive(ctx, e):
				lane.waiting[key] = append(lane.waiting[key], e)
			}
			lane.next = e.Pos
		}
		if len(entries) < forwardBatch {
			return
		}
	}
}

// retryWaiting sends each chain's waiting messages in order, stopping at
// the first that still cannot go out.
func (f *Forwarder) retryWaiting(ctx context.Context, lane *liveLane) {
	for key, queue := range lane.waiting {
		sent := 0
		for _, e := range queue {
			if !f.publishLive(ctx, e) {
				break
			}
			sent++
		}
		if sent == len(queue) {
			delete(lane.waiting, key)
		} else {
			lane.waiting[key] = queue[sent:]
		}
	}
}

func (f *Forwarder) publishLive(ctx context.Context, e storage.Logged) bool {
	topic, err := f.topic(e.Part)
	if err != nil || topic.Publish(ctx, e.Encoded) != nil {
		return false
	}
	f.liveSent[e.Pos] = struct{}{}
	return true
}

// laneKey names the chain of a logged message; an undecodable one gets
// its own key and so is never held back.
func laneKey(e storage.Logged) string {
	m, err := streamr.Unmarshal(e.Encoded)
	if err != nil {
		return fmt.Sprintf("undecodable/%d", e.Pos)
	}
	return e.Part.String() + "\x00" + m.ID.PublisherHex() + "\x00" + m.ID.MsgChainID
}

// forward publishes one entry unless it went out before; it reports
// whether the entry now counts as forwarded.
func (f *Forwarder) forward(ctx context.Context, e storage.Logged, dirty map[string]uint64) bool {
	sent, err := f.sentUpTo(e.Part)
	if err != nil {
		f.logger.Warn("read forwarding position", "stream_part", e.Part.String(), "err", err)
		return false
	}
	if e.Pos <= sent {
		return true // forwarded before a restart or an earlier pass
	}
	topic, err := f.topic(e.Part)
	if err == nil {
		err = topic.Publish(ctx, e.Encoded)
	}
	if err != nil {
		if !errors.Is(err, ErrNoPeers) {
			f.logger.Warn("forward message", "stream_part", e.Part.String(), "pos", e.Pos, "err", err)
		}
		return false
	}
	f.sent[e.Part] = e.Pos
	dirty[partCursor(e.Part)] = e.Pos
	return true
}

func (f *Forwarder) sentUpTo(part streamr.StreamPartID) (uint64, error) {
	if pos, ok := f.sent[part]; ok {
		return pos, nil
	}
	pos, err := f.log.Cursor(partCursor(part))
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
	f.logger.Info("forwarding into overlay", "stream_part", part.String())
	return t, nil
}
