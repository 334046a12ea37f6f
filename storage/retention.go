package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// retentionBatch is how many messages one retention transaction deletes.
const retentionBatch = 256

// flattenShare: maintenance compacts the whole LSM tree when retention
// deleted at least 1/flattenShare of the stored signed bytes.
const flattenShare = 4

// gcDiscardRatio is the share of a value log file that must be garbage for
// GC to rewrite it (Badger's recommended 0.5).
const gcDiscardRatio = 0.5

// Run runs the group committer and the retention and value-log GC
// schedule. When ctx ends it commits the appends already queued, refuses
// new ones with ErrClosed and returns nil. Call it once, before Close.
func (s *Store) Run(ctx context.Context) error {
	if s.running.Swap(true) {
		return errors.New("storage: Run called twice")
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.gcLoop(ctx) })
	s.commitLoop(ctx)
	wg.Wait()
	return nil
}

func (s *Store) gcLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.maintain(ctx, time.Now())
		}
	}
}

// maintain applies retention as of now, then reclaims value log space.
func (s *Store) maintain(ctx context.Context, now time.Time) {
	if err := s.space.secure(); err != nil {
		s.m.diskWaits.WithLabelValues("retention").Inc()
		s.log.Warn("retention and value log GC wait for free space", "err", err)
		return
	}
	before := s.signedTotal()
	n, err := s.applyRetention(ctx, now)
	if err != nil {
		s.log.Error("apply retention", "err", err)
	}
	if n > 0 {
		s.log.Info("retention deleted messages", "count", n)
	}
	if deleted := before - s.signedTotal(); deleted > 0 && deleted >= before/flattenShare {
		// Deletions of the log head only free space once compaction
		// carries their tombstones down to the data; in a FIFO that may
		// not happen on its own for a long time.
		if err := s.db.Flatten(1); err != nil {
			s.log.Error("compact after retention", "err", err)
		}
	}
	rewrites, err := s.collectValueLog(ctx)
	if err != nil {
		s.log.Error("value log GC", "err", err)
	}
	if err := s.space.measure(); err != nil {
		s.log.Warn("measure disk usage", "err", err)
	}
	lsm, vlog := s.space.usage()
	s.log.Debug("storage maintenance done", "deleted", n, "vlog_rewrites", rewrites, "lsm_bytes", lsm, "vlog_bytes", vlog)
}

// collectValueLog runs Badger's value log GC until it finds no file worth
// rewriting, and returns how many files it rewrote.
func (s *Store) collectValueLog(ctx context.Context) (int, error) {
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return n, nil
		}
		err := s.db.RunValueLogGC(gcDiscardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// RetentionGuard says whether the receivers that must hold a stored
// message have acknowledged it (delivery receipts). Retention calls it
// for each message it would delete, oldest first, with the store's signing
// lock held: it must answer from memory and must not write to the Store.
type RetentionGuard interface {
	Acknowledged(part streamr.StreamPartID, publisher []byte, chainID string, ref streamr.MessageRef) bool
}

// retentionRun is the state of one retention pass.
type retentionRun struct {
	cutoff int64 // messages with older timestamps have expired

	// force is how many more encoded bytes the quota requires retention to
	// delete: while it is positive, unacknowledged messages go too.
	force       int64
	used, limit int64 // disk usage and the quota limit that set force

	dropped droppedMessages    // unacknowledged messages deleted
	blocked *streamr.MessageID // the message that held retention back, if any
}

// droppedMessages counts messages deleted before they were acknowledged.
type droppedMessages struct {
	count  int
	bytes  int64
	byPart map[string]int
}

func (d *droppedMessages) add(id *streamr.MessageID, size int) {
	if d.byPart == nil {
		d.byPart = make(map[string]int)
	}
	d.count++
	d.bytes += int64(size)
	d.byPart[id.StreamPart().String()]++
}

func (d *droppedMessages) merge(o droppedMessages) {
	for part, n := range o.byPart {
		if d.byPart == nil {
			d.byPart = make(map[string]int)
		}
		d.byPart[part] += n
	}
	d.count += o.count
	d.bytes += o.bytes
}

// applyRetention deletes signed messages from the head of the log while
// the head message is older than Retention or the stored total exceeds
// RetentionBytes. Going in log order keeps it proportional to what it
// deletes; a late-signed message with an old timestamp waits for the ones
// logged before it. With a Guard, retention also stops at the first
// message not acknowledged, unless the store is over its quota: then it
// deletes unacknowledged messages too, as many bytes as the quota
// requires, and says so at Error level. It returns how many messages it
// deleted.
func (s *Store) applyRetention(ctx context.Context, now time.Time) (int, error) {
	if s.opts.Retention <= 0 && s.opts.RetentionBytes <= 0 {
		return 0, nil
	}
	run := &retentionRun{cutoff: int64(-1 << 63)}
	if s.opts.Retention > 0 {
		run.cutoff = now.Add(-s.opts.Retention).UnixMilli()
	}
	s.setQuotaForce(run)
	total, err := s.retain(ctx, run)
	s.reportRetention(run)
	return total, err
}

// retain deletes expired messages batch by batch until none is left to
// delete or ctx ends.
func (s *Store) retain(ctx context.Context, run *retentionRun) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n, more, err := s.retainBatch(run)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
	return total, nil
}

// setQuotaForce sets how many bytes the quota forces retention to delete
// whether or not they were acknowledged: the disk usage above the limit
// from which the store refuses readings (90% of QuotaBytes, where QoS 0
// is refused).
func (s *Store) setQuotaForce(run *retentionRun) {
	if s.opts.Guard == nil || s.opts.QuotaBytes <= 0 {
		return
	}
	if err := s.space.measure(); err != nil {
		s.log.Warn("measure disk usage for retention", "err", err)
	}
	lsm, vlog := s.space.usage()
	run.used = lsm + vlog
	run.limit = s.opts.QuotaBytes - s.opts.QuotaBytes/10
	run.force = max(0, run.used-run.limit)
}

// reportRetention logs what the guard held back and what the quota
// forced, and counts the forced deletions.
func (s *Store) reportRetention(run *retentionRun) {
	if d := run.dropped; d.count > 0 {
		s.m.unackedDropped.Add(float64(d.count))
		s.log.Error("deleted messages no required receiver has acknowledged: disk quota",
			"count", d.count, "bytes", d.bytes, "by_stream_part", d.byPart,
			"used_bytes", run.used, "quota_bytes", s.opts.QuotaBytes, "limit_bytes", run.limit)
	}
	if id := run.blocked; id != nil {
		s.log.Info("retention waits for a delivery receipt", "stream_part", id.StreamPart().String(),
			"publisher", id.PublisherHex(), "chain", id.MsgChainID, "ref", id.Ref().String())
	}
}

// retainBatch deletes up to retentionBatch expired messages, as many as
// fit one transaction, and says whether more may be due.
func (s *Store) retainBatch(run *retentionRun) (n int, more bool, err error) {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	// Deferred chain states go first: recovery must not find their
	// messages deleted.
	if err := s.saveUnsaved(time.Now()); err != nil {
		return 0, false, err
	}
	t := s.newSplit()
	defer t.discard()
	heads, err := s.logHead(t.txn, retentionBatch)
	if err != nil {
		return 0, false, err
	}
	bytes, force := s.signedBytes, run.force
	counters := t.cost(signCounters(0, 0)...)
	var dropped droppedMessages
	for _, h := range heads {
		id := &h.Msg.ID
		over := s.opts.RetentionBytes > 0 && bytes > s.opts.RetentionBytes
		if !over && id.Timestamp >= run.cutoff {
			break
		}
		acked := s.acknowledged(id)
		if !acked && force <= 0 {
			run.blocked = id
			break
		}
		ws, err := deletesOf(t.txn, h)
		if err != nil {
			return 0, false, err
		}
		if !t.fits(t.cost(ws...).plus(counters)) {
			more = true // the next batch goes on from here
			break
		}
		if err := t.put(ws...); err != nil {
			return 0, false, fmt.Errorf("delete log entry %d: %w", h.pos, err)
		}
		if !acked {
			dropped.add(id, len(h.Encoded))
		}
		bytes -= int64(len(h.Encoded))
		force -= int64(len(h.Encoded))
		n++
	}
	if n == 0 {
		return 0, false, nil
	}
	if err := t.put(signCounters(s.nextPos, bytes)...); err != nil {
		return 0, false, err
	}
	if err := t.commit(); err != nil {
		return 0, false, fmt.Errorf("commit deletion of %d expired messages: %w", n, err)
	}
	s.signedBytes = bytes
	run.force = force
	run.dropped.merge(dropped)
	return n, more || n == retentionBatch, nil
}

// acknowledged asks the guard, if any, whether a message may be deleted.
func (s *Store) acknowledged(id *streamr.MessageID) bool {
	return s.opts.Guard == nil || s.opts.Guard.Acknowledged(id.StreamPart(), id.PublisherID, id.MsgChainID, id.Ref())
}

// headEntry is a decoded log entry considered for deletion.
type headEntry struct {
	pos  uint64
	part uint32
	streamr.Envelope
}

// logHead decodes up to max entries from the start of the log.
func (s *Store) logHead(txn *badger.Txn, max int) ([]headEntry, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}, PrefetchValues: true, PrefetchSize: max})
	defer it.Close()
	var out []headEntry
	for it.Rewind(); it.Valid() && len(out) < max; it.Next() {
		h := headEntry{pos: getU64(it.Item().Key()[1:])}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("read log entry %d: %w", h.pos, err)
		}
		if h.part, _, h.Encoded, err = decodeLogValue(h.pos, v); err != nil {
			return nil, err
		}
		if h.Msg, err = streamr.Unmarshal(h.Encoded); err != nil {
			return nil, fmt.Errorf("log entry %d: %w", h.pos, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// deletesOf returns the deletion of a log entry and its index key,
// unless the index key has since been taken by a newer message with the
// same ID.
func deletesOf(txn *badger.Txn, h headEntry) ([]write, error) {
	id := &h.Msg.ID
	ik := indexKey(h.part, id.Timestamp, id.SequenceNumber, id.PublisherID, id.MsgChainID)
	ws := []write{{key: logKey(h.pos), del: true}}
	item, err := txn.Get(ik)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return ws, nil
	case err != nil:
		return nil, fmt.Errorf("read index of log entry %d: %w", h.pos, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("read index of log entry %d: %w", h.pos, err)
	}
	if len(v) == 8 && getU64(v) == h.pos {
		ws = append(ws, write{key: ik, del: true})
	}
	return ws, nil
}
