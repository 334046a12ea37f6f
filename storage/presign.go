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
	// an error the chain states Presign advanced were not stored.
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
// that fit one transaction each, reports each reading's outcome and
// returns the readings left to store pending.
func (s *Store) presignBatch(ctx context.Context, batch []*appendReq) []*appendReq {
	for len(batch) > 0 {
		n := s.presignChunk(batch)
		stored, err := s.commitPresigned(ctx, batch[:n])
		s.m.batches.WithLabelValues(stored).Inc()
		if stored != storedPresigned {
			return batch
		}
		for _, req := range batch[:n] {
			req.finish(err)
		}
		if err != nil {
			s.log.Error("commit presigned readings", "first_seq", batch[0].seq, "count", n, "err", err)
		} else {
			s.m.commits.Inc()
			s.m.batchSize.Observe(float64(n))
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

// commitPresigned offers chunk to the presigner and, if it signs it,
// commits the signed messages in one synced transaction. It says how the
// chunk was stored: storedPresigned (with the commit's error), or why it
// must be stored pending instead.
func (s *Store) commitPresigned(ctx context.Context, chunk []*appendReq) (string, error) {
	if s.presigner == nil || s.pending.Load() != 0 {
		return storedPending, nil
	}
	readings, err := s.decodeChunk(chunk)
	if err != nil {
		s.log.Error("decode readings to presign; storing them unsigned", "err", err)
		return storedFailed, nil
	}
	msgs, chains, err := s.presigner.Presign(ctx, readings)
	switch {
	case err != nil:
		s.log.Warn("presign failed; storing the readings unsigned", "first_seq", chunk[0].seq, "count", len(chunk), "err", err)
		return storedFailed, nil
	case msgs == nil:
		return storedDeclined, nil
	case !matches(msgs, chunk):
		s.presigner.Committed(msgs, errPresignMismatch)
		s.log.Error("presigned messages do not match the readings; storing the readings unsigned", "readings", len(chunk), "messages", len(msgs))
		return storedFailed, nil
	}
	err = s.commitSignedTxn(chunk[len(chunk)-1].seq, msgs, chains)
	s.presigner.Committed(msgs, err)
	if errors.Is(err, errPresignTooBig) {
		return storedTooLarge, nil
	}
	return storedPresigned, err
}

// decodeChunk returns the readings of chunk for the presigner.
func (s *Store) decodeChunk(chunk []*appendReq) ([]Reading, error) {
	readings := make([]Reading, len(chunk))
	for i, req := range chunk {
		r, part, err := decodeReading(req.seq, req.value)
		if err == nil {
			r.Part, err = s.partName(part)
		}
		if err != nil {
			return nil, err
		}
		readings[i] = r
	}
	return readings, nil
}

// commitSignedTxn stores presigned messages, the chain states and the
// reading counter in one synced transaction.
func (s *Store) commitSignedTxn(lastSeq uint64, msgs []Signed, chains map[string]streamr.ChainState) error {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(keyNextSeq, putU64(lastSeq+1)); err != nil {
		return fmt.Errorf("store next reading sequence: %w", err)
	}
	added, err := s.putPresigned(txn, msgs)
	var recordChains func()
	if err == nil {
		recordChains, err = s.putPresignedChains(txn, chains, s.nextPos+uint64(len(msgs)), time.Now())
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
