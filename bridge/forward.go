package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

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
}

// forwardBatch is how many log entries one pass reads.
const forwardBatch = 512

// NewForwarder returns a forwarder; Run starts it. retry is how often
// partitions without peers are tried again.
func NewForwarder(log ForwardLog, overlay Overlay, retry time.Duration, logger *slog.Logger) *Forwarder {
	return &Forwarder{
		log: log, overlay: overlay, logger: logger, retry: retry,
		kick:   make(chan struct{}, 1),
		topics: make(map[streamr.StreamPartID]Topic),
		sent:   make(map[streamr.StreamPartID]uint64),
	}
}

// HoldingBack reports whether messages are waiting in storage for peers.
func (f *Forwarder) HoldingBack() bool { return f.held.Load() }

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
		more, err := f.pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			f.logger.Warn("forwarding failed; retrying", "err", err)
		case more:
			continue
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
		entries, err := f.log.After(pos, forwardBatch)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			if ctx.Err() != nil {
				break
			}
			if !blocked[e.Part] && f.forward(ctx, e, dirty) {
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
		if err := f.log.SetCursors(ctx, dirty); err != nil {
			return false, fmt.Errorf("save forwarding positions: %w", err)
		}
	}
	f.low = newLow
	f.held.Store(len(blocked) > 0)
	return scanned >= maxScan && len(blocked) == 0, nil
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
