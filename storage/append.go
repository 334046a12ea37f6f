package storage

import (
	"context"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// appendReq is one reading waiting for the group committer.
type appendReq struct {
	seq    uint64
	value  []byte     // the encoded reading; never modified
	done   chan error // buffered; nil for non-durable appends
	queued time.Time  // when Enqueue queued it
	// part and source are the reading's, kept so that presigning reads
	// the reading from value without copying or looking anything up.
	part   streamr.StreamPartID
	source string
}

// Append stores r and sets r.Seq. If durable, it returns only after r has
// been fsync'd as part of a group commit: each commit takes every reading
// queued while the previous one ran (up to MaxBatch) into one synced Badger
// transaction, so there is no timer latency at low load. If !durable (QoS 0)
// it returns once r is queued, and r is written with the next batch; a
// crash before then loses it.
//
// If ctx ends before the commit, Append returns ctx's error and the reading
// may or may not be stored. Run must be running.
func (s *Store) Append(ctx context.Context, r *Reading, durable bool) error {
	wait, err := s.Enqueue(r, durable)
	if err != nil {
		return err
	}
	return wait(ctx)
}

// Enqueue is Append without the wait: it admits r against the quota,
// queues it for the next group commit and sets r.Seq. The returned wait
// blocks until r is fsync'd (at once for non-durable readings), so a
// caller can queue many readings and acknowledge each as it becomes
// durable. Waits complete in Seq order.
func (s *Store) Enqueue(r *Reading, durable bool) (wait func(context.Context) error, err error) {
	part, err := s.partNumber(r.Part)
	if err != nil {
		return nil, err
	}
	value := encodeReading(r, part)
	if len(value) > MaxReadingBytes {
		return nil, fmt.Errorf("reading from %q on %s: %d bytes encoded, limit %d: %w", r.Source, r.Part, len(value), MaxReadingBytes, ErrTooLarge)
	}
	if err := s.admit(int64(len(value)), durable); err != nil {
		return nil, err
	}
	req := &appendReq{value: value, part: r.Part, source: r.Source}
	if durable {
		req.done = make(chan error, 1)
	}
	if err := s.enqueue(req); err != nil {
		return nil, err
	}
	r.Seq = req.seq
	return req.wait, nil
}

// wait blocks until the request is committed, or ctx ends.
func (r *appendReq) wait(ctx context.Context) error {
	if r.done == nil {
		return nil
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("append reading %d: %w", r.seq, ctx.Err())
	}
}

// enqueue assigns the next sequence number under the queue lock, so queue
// order, sequence order and commit order are the same.
func (s *Store) enqueue(req *appendReq) error {
	req.queued = time.Now() // before the committer can see it
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return ErrClosed
	}
	req.seq = s.nextSeq
	s.nextSeq++
	s.queue = append(s.queue, req)
	s.queueBytes += len(req.value)
	s.mu.Unlock()
	s.arrivals.add(req.queued)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// take removes up to max requests from the head of the queue.
func (s *Store) take(max int) []*appendReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), max)
	batch := make([]*appendReq, n)
	copy(batch, s.queue)
	for _, req := range batch {
		s.queueBytes -= len(req.value)
	}
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	return batch
}

// stop refuses further appends and fails the queued ones with err.
func (s *Store) stop(err error) {
	s.mu.Lock()
	s.stopped = true
	queued := s.queue
	s.queue, s.queueBytes = nil, 0
	s.mu.Unlock()
	for _, req := range queued {
		req.finish(err)
	}
}

// finishAll reports the outcome of reqs' commit, timing the durable ones.
func (s *Store) finishAll(reqs []*appendReq, err error) {
	now := time.Now()
	for _, req := range reqs {
		if err == nil && req.done != nil {
			s.m.durableWait.Observe(now.Sub(req.queued).Seconds())
		}
		req.finish(err)
	}
}

func (r *appendReq) finish(err error) {
	if r.done != nil {
		r.done <- err
	}
}

// commitLoop is the group committer. When ctx ends it commits what is
// queued, refuses further appends and returns.
func (s *Store) commitLoop(ctx context.Context) {
	// The last batches are committed (and presigned) after ctx ends.
	signCtx := context.WithoutCancel(ctx)
	for {
		select {
		case <-s.wake:
			s.gather(ctx)
			s.drain(signCtx)
		case <-ctx.Done():
			s.mu.Lock()
			s.stopped = true
			s.mu.Unlock()
			s.drain(signCtx)
			if leftover, _ := s.land(); len(leftover) > 0 {
				s.commitPending(leftover)
			}
			return
		}
	}
}

// gatherBytes is how many bytes of readings fill about two 4 KiB pages of
// the write-ahead log once signed (a signed message and its index entry
// take about twice its reading's bytes). Every synced commit rewrites the
// log's last, partly filled page, so once a commit carries two pages that
// rewrite costs each reading at most a sixteenth of a page, and waiting
// longer gains little.
const gatherBytes = 4096

// gather lets readings join the first for up to CommitWindow, and ends
// early once two pages' worth (or a full batch) is queued. When arrivals are
// so sparse that fewer than one more reading is expected within the
// window, it does not wait at all: waiting would add latency and save no
// page. It ends too when ctx ends.
func (s *Store) gather(ctx context.Context) {
	w := s.opts.CommitWindow
	if w <= 0 {
		return
	}
	if s.arrivals.expected(time.Now(), w) < 1 {
		s.m.windows.WithLabelValues(windowSkipped).Inc()
		return
	}
	t := time.NewTimer(w)
	defer t.Stop()
	// While a presigned commit is in flight, nothing can be committed
	// before it lands: an expired window waits for it too, so that what
	// arrives meanwhile shares the next sync (signing ahead pays only once
	// two pages' worth is queued).
	var landed <-chan struct{}
	if s.flight != nil {
		landed = s.flight.done
	}
	expired := false
	for !s.gathered() {
		select {
		case <-s.wake: // another reading arrived; drain takes every queued one
		case <-t.C:
			if expired = true; !s.flight.inFlight() {
				s.m.windows.WithLabelValues(windowExpired).Inc()
				return
			}
		case <-landed:
			if landed = nil; expired {
				s.m.windows.WithLabelValues(windowExpired).Inc()
				return
			}
		case <-ctx.Done():
			return
		}
	}
	s.m.windows.WithLabelValues(windowFilled).Inc()
}

// gathered says whether the queue holds two pages' worth or a full batch.
func (s *Store) gathered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueBytes >= gatherBytes || len(s.queue) >= s.opts.MaxBatch
}

// Outcomes of gather, the outcome label of tributary_storage_commit_windows_total.
const (
	windowFilled  = "filled"  // two pages' worth or a full batch gathered before the window ended
	windowExpired = "expired" // the window ended
	windowSkipped = "skipped" // arrivals too sparse to wait for
)

// arrivalRate estimates the rate at which readings are queued, smoothed
// over samples of at least arrivalSample.
type arrivalRate struct {
	mu        sync.Mutex
	since     time.Time // start of the current sample
	count     int       // readings queued in the current sample
	perSecond float64   // smoothed rate; 0 until the first sample ends
}

const arrivalSample = 100 * time.Millisecond

// add counts one queued reading at now.
func (a *arrivalRate) add(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.roll(now)
	a.count++
}

// expected returns how many readings are expected to arrive within d of
// now: at least one until a rate is known, so a new store gathers.
func (a *arrivalRate) expected(now time.Time, d time.Duration) float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.roll(now)
	if a.perSecond == 0 && a.count > 0 {
		return 1
	}
	return a.perSecond * d.Seconds()
}

// roll ends the current sample if it is old enough and folds it into the
// smoothed rate; a long idle gap resets the rate to what that gap says.
func (a *arrivalRate) roll(now time.Time) {
	elapsed := now.Sub(a.since)
	if a.since.IsZero() {
		a.since = now
		return
	}
	if elapsed < arrivalSample {
		return
	}
	rate := float64(a.count) / elapsed.Seconds()
	if a.perSecond == 0 || elapsed > 10*arrivalSample {
		a.perSecond = rate
	} else {
		a.perSecond = 0.7*a.perSecond + 0.3*rate
	}
	a.since, a.count = now, 0
}

// drain commits batches until the queue is empty.
func (s *Store) drain(ctx context.Context) {
	for {
		batch := s.take(s.opts.MaxBatch)
		if len(batch) == 0 {
			return
		}
		s.commitBatch(ctx, batch)
	}
}

// commitBatch writes batch, signed by the presigner if it can (the last
// presigned commit may still be in flight when it returns: see
// presignBatch), else pending in as few synced transactions as Badger's
// transaction size limit allows (one, unless readings are large).
func (s *Store) commitBatch(ctx context.Context, batch []*appendReq) {
	start := time.Now()
	if batch = s.presignBatch(ctx, batch); len(batch) > 0 {
		s.commitPending(batch) // presigned commits observe their own time
		s.m.observeCommit(time.Since(start))
	}
	s.space.maybeMeasure(s.log)
}

// commitPending stores batch pending (unsigned) and reports each reading's
// outcome once its transaction is durable.
func (s *Store) commitPending(batch []*appendReq) {
	for len(batch) > 0 {
		n, err := s.commitTxn(batch)
		if err != nil {
			s.log.Error("commit readings", "first_seq", batch[0].seq, "count", n, "err", err)
		} else {
			s.pending.Add(int64(n)) // before the acks: a caller may count them at once
		}
		s.finishAll(batch[:n], err)
		batch = batch[n:]
	}
}

// commitTxn writes a prefix of batch, with the next-sequence counter, in
// one synced transaction and returns how many readings it covered. On error
// that many readings failed.
func (s *Store) commitTxn(batch []*appendReq) (int, error) {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	// The counter goes first so it always fits. If the readings do not all
	// fit, it skips a few numbers, which is harmless: numbers are never reused.
	if err := txn.Set(keyNextSeq, putU64(batch[len(batch)-1].seq+1)); err != nil {
		return len(batch), fmt.Errorf("store next reading sequence: %w", err)
	}
	n := 0
	for _, req := range batch {
		err := txn.Set(readingKey(req.seq), req.value)
		if err != nil && n > 0 {
			break // ErrTxnTooBig: commit what fits, the rest goes in the next txn
		}
		if err != nil {
			return 1, fmt.Errorf("store reading %d: %w", req.seq, err)
		}
		n++
	}
	if err := txn.Commit(); err != nil {
		return n, fmt.Errorf("commit readings %d-%d: %w", batch[0].seq, batch[n-1].seq, err)
	}
	s.m.commits.Inc()
	s.m.batchSize.Observe(float64(n))
	return n, nil
}

// Pending returns up to max stored readings with Seq > after, in Seq order.
func (s *Store) Pending(after uint64, max int) ([]Reading, error) {
	var out []Reading
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindReading}, PrefetchValues: true, PrefetchSize: min(max, 100)})
		defer it.Close()
		for it.Seek(readingKey(after + 1)); it.Valid() && len(out) < max; it.Next() {
			seq := getU64(it.Item().Key()[1:])
			r, err := s.readReading(seq, it.Item())
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pending readings after %d: %w", after, err)
	}
	return out, nil
}

func (s *Store) readReading(seq uint64, item *badger.Item) (Reading, error) {
	var r Reading
	err := item.Value(func(v []byte) error {
		var part uint32
		var err error
		if r, part, err = decodeReading(seq, v); err != nil {
			return err
		}
		r.Part, err = s.partName(part)
		return err
	})
	return r, err
}
