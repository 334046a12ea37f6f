package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// A Presigner signs readings inside the group commit, so that a reading
// that can be signed at once is written once, already signed, in the same
// synced transaction that makes it durable: no pending reading is written,
// read back, deleted and rewritten as a signed message by a second synced
// commit. Readings it declines are stored pending as before.
type Presigner interface {
	// Presign returns one signed message per reading, in order, and the
	// chain states they advanced, or (nil, nil, nil) to store the batch
	// unsigned. The store calls it from its committer goroutine only while
	// no reading is pending, so chain order is kept. On an error the
	// batch is stored unsigned (Presign must leave its chains as they were).
	Presign(ctx context.Context, readings []Reading) ([]Signed, map[string]streamr.ChainState, error)
	// Committed reports the outcome of storing what Presign returned: on
	// an error the chain states Presign advanced were not stored. The
	// next Presign may come before it (while that batch's commit is in
	// flight); Committed reports batches in the order Presign made them.
	Committed(msgs []Signed, err error)
}

// errPresignTooBig makes a presigned batch that did not fit one
// transaction go the unsigned way.
var errPresignTooBig = errors.New("presigned batch exceeds one transaction")

var errPresignMismatch = errors.New("presigner did not return one message per reading, in order")

// Batch outcomes, the stored label of tributary_storage_batches_total.
const (
	storedPresigned = "presigned"
	storedPending   = "pending"           // no presigner, or readings were pending already
	storedDeclined  = "declined"          // the presigner declined (slow signer, held clock)
	storedFailed    = "presign_failed"    // the presigner failed or returned the wrong messages
	storedTooLarge  = "presign_too_large" // the signed batch did not fit a transaction
)

// SetPresigner makes the group committer offer batches to p. Call it before
// Run.
func (s *Store) SetPresigner(p Presigner) { s.presigner = p }

// presignBatch commits as much of batch as the presigner signs, in chunks
// that fit one transaction each, and returns the readings left to store
// pending. A presigned chunk's synced commit runs on its own goroutine
// (flight) while the committer signs the next chunk: signing takes the
// CPU and the commit waits for the disk, so overlapping them keeps both
// busy. Each chunk continues the chains of the one before it, so it is
// committed only once that one is durable, and never if it failed.
func (s *Store) presignBatch(ctx context.Context, batch []*appendReq) []*appendReq {
	for len(batch) > 0 {
		n := s.presignChunk(batch)
		p, stored := s.presign(ctx, batch[:n])
		leftover, prevErr := s.land() // p continues the chains of the commit in flight
		switch {
		case len(leftover) > 0: // it did not fit: store it, and everything after it, pending
			if p != nil {
				p.abandon(s, errPresignBehindPending, nil)
				stored = storedPending
			}
			s.m.batches.WithLabelValues(stored).Inc()
			return append(leftover, batch...)
		case p == nil:
			s.m.batches.WithLabelValues(stored).Inc()
			return batch
		case p.mismatch: // reported only now: Committed calls come in commit order
			p.abandon(s, errPresignMismatch, nil)
			s.log.Error("presigned messages do not match the readings; storing the readings unsigned", "readings", n, "messages", len(p.msgs))
			s.m.batches.WithLabelValues(storedFailed).Inc()
			return batch
		case prevErr != nil:
			err := fmt.Errorf("presigned readings after a failed commit: %w", prevErr)
			s.log.Error("commit presigned readings", "first_seq", p.chunk[0].seq, "count", n, "err", err)
			p.abandon(s, err, err)
			s.m.batches.WithLabelValues(storedFailed).Inc()
		default:
			s.launch(p)
		}
		batch = batch[n:]
	}
	return nil
}

// presignChunk returns how many readings from the head of batch (at least
// one) to presign in one transaction: a signed message with its index key
// takes up to about twice its reading's bytes in Badger's batch size
// limit, so a quarter of that limit in reading bytes leaves room.
func (s *Store) presignChunk(batch []*appendReq) int {
	budget := int(s.db.MaxBatchSize() / 4)
	n, size := 0, 0
	for _, req := range batch {
		if size += len(req.value) + 64; n > 0 && size > budget {
			break
		}
		n++
	}
	return n
}

// presignedChunk is a chunk of readings and the messages the presigner
// made of them.
type presignedChunk struct {
	chunk  []*appendReq
	msgs   []Signed
	chains map[string]streamr.ChainState
	start  time.Time
	// mismatch: the presigner did not return one message per reading, in
	// order; the chunk is stored pending.
	mismatch bool
}

// abandon reports p's messages as not committed (the presigner forgets
// their chain states) and finishes its readings with result: nil leaves
// them to the caller, which stores them pending.
func (p *presignedChunk) abandon(s *Store, err, result error) {
	s.presigner.Committed(p.msgs, err)
	if result == nil {
		return
	}
	for _, req := range p.chunk {
		req.finish(result)
	}
}

// errPresignBehindPending: a presigned chunk came after one that had to
// be stored pending, and so must be stored pending too (chain order).
var errPresignBehindPending = errors.New("an earlier presigned batch is stored unsigned")

// flight is a presigned chunk's synced commit running on its own goroutine.
type flight struct {
	done     chan struct{}
	err      error
	leftover []*appendReq // the chunk, if it did not fit one transaction
}

// inFlight reports whether f (nil: none) has not landed yet.
func (f *flight) inFlight() bool {
	if f == nil {
		return false
	}
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

// launch commits p on a goroutine of its own; land collects the outcome.
// Only the committer goroutine calls launch and land.
func (s *Store) launch(p *presignedChunk) {
	f := &flight{done: make(chan struct{})}
	s.flight = f
	go func() {
		defer close(f.done)
		err := s.commitSignedTxn(p.chunk[len(p.chunk)-1].seq, p.msgs, p.chains)
		s.presigner.Committed(p.msgs, err)
		if errors.Is(err, errPresignTooBig) {
			f.leftover = p.chunk
			return
		}
		f.err = err
		s.finishAll(p.chunk, err)
		if err != nil {
			s.log.Error("commit presigned readings", "first_seq", p.chunk[0].seq, "count", len(p.chunk), "err", err)
		} else {
			s.m.commits.Inc()
			s.m.batchSize.Observe(float64(len(p.chunk)))
		}
		s.m.batches.WithLabelValues(storedPresigned).Inc()
		s.m.observeCommit(time.Since(p.start))
	}()
}

// land waits for the commit in flight, if any. It returns that commit's
// error, or its readings if they did not fit one transaction presigned
// and must be stored pending.
func (s *Store) land() ([]*appendReq, error) {
	f := s.flight
	if f == nil {
		return nil, nil
	}
	<-f.done
	s.flight = nil
	if f.leftover != nil {
		s.m.batches.WithLabelValues(storedTooLarge).Inc()
	}
	return f.leftover, f.err
}

// presign offers chunk to the presigner. It returns the signed chunk, or
// nil and why the chunk must be stored pending.
func (s *Store) presign(ctx context.Context, chunk []*appendReq) (*presignedChunk, string) {
	if s.presigner == nil || s.pending.Load() != 0 {
		return nil, storedPending
	}
	start := time.Now()
	readings, err := s.decodeChunk(chunk)
	if err != nil {
		s.log.Error("decode readings to presign; storing them unsigned", "err", err)
		return nil, storedFailed
	}
	msgs, chains, err := s.presigner.Presign(ctx, readings)
	switch {
	case err != nil:
		s.log.Warn("presign failed; storing the readings unsigned", "first_seq", chunk[0].seq, "count", len(chunk), "err", err)
		return nil, storedFailed
	case msgs == nil:
		return nil, storedDeclined
	}
	p := &presignedChunk{chunk: chunk, msgs: msgs, chains: chains, start: start, mismatch: !matches(msgs, chunk)}
	return p, storedPresigned
}

// decodeChunk returns the readings of chunk for the presigner. Their
// payloads share the requests' encoded values, which nothing modifies.
func (s *Store) decodeChunk(chunk []*appendReq) ([]Reading, error) {
	readings := make([]Reading, len(chunk))
	for i, req := range chunk {
		r, _, _, payload, err := decodeReadingView(req.seq, req.value)
		if err != nil {
			return nil, err
		}
		r.Part, r.Source, r.Payload = req.part, req.source, payload
		readings[i] = r
	}
	return readings, nil
}

// commitSignedTxn stores presigned messages, the chain states and the
// reading counter in one synced transaction.
func (s *Store) commitSignedTxn(lastSeq uint64, msgs []Signed, chains map[string]streamr.ChainState) error {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	now := time.Now()
	if err := s.saveDueApart(now); err != nil { // too many to share this transaction
		return err
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(keyNextSeq, putU64(lastSeq+1)); err != nil {
		return fmt.Errorf("store next reading sequence: %w", err)
	}
	added, err := s.putPresigned(txn, msgs)
	var recordChains func()
	if err == nil {
		recordChains, err = s.putPresignedChains(txn, chains, s.nextPos+uint64(len(msgs)), now)
	}
	if err == nil {
		err = s.putSignCounters(txn, s.nextPos+uint64(len(msgs)), s.signedBytes+added)
	}
	if errors.Is(err, badger.ErrTxnTooBig) {
		return errPresignTooBig
	}
	if err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit %d presigned messages: %w", len(msgs), err)
	}
	s.nextPos += uint64(len(msgs))
	s.signedBytes += added
	recordChains()
	return nil
}

// putPresigned writes the log entries and index keys of msgs at positions
// from s.nextPos and returns their total encoded size.
func (s *Store) putPresigned(txn *badger.Txn, msgs []Signed) (int64, error) {
	var total int64
	for i, sm := range msgs {
		id := &sm.Msg.ID
		part, err := s.partNumber(id.StreamPart())
		if err != nil {
			return 0, err
		}
		if sm.Encoded == nil {
			return 0, fmt.Errorf("presigned message of reading %d is not encoded", sm.ReadingSeq)
		}
		if err := putMessage(txn, s.nextPos+uint64(i), part, sm.ReadingSeq, id, sm.Encoded); err != nil {
			return 0, fmt.Errorf("store message %s of reading %d: %w", id.Ref(), sm.ReadingSeq, err)
		}
		total += int64(len(sm.Encoded))
	}
	return total, nil
}

func matches(msgs []Signed, batch []*appendReq) bool {
	if len(msgs) != len(batch) {
		return false
	}
	for i, m := range msgs {
		if m.ReadingSeq != batch[i].seq {
			return false
		}
	}
	return true
}
