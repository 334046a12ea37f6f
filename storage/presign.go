package storage

import (
	"context"
	"errors"
	"fmt"

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

// presignMaxBytes bounds the encoded readings of a batch the store offers
// its Presigner: signed, they must fit one Badger transaction (about
// 600 kB with 4 MB memtables) with their index keys. Larger batches are
// stored unsigned.
const presignMaxBytes = 256 << 10

// errPresignTooBig makes a presigned batch that did not fit one
// transaction go the unsigned way.
var errPresignTooBig = errors.New("presigned batch exceeds one transaction")

var errPresignMismatch = errors.New("presigner did not return one message per reading, in order")

// SetPresigner makes the group committer offer batches to p. Call it before
// Run.
func (s *Store) SetPresigner(p Presigner) { s.presigner = p }

// presignable returns the batch's readings if the presigner may sign them
// now: one is set, no reading is pending (so no older reading of any chain
// is waiting for the background signer) and the batch fits a transaction.
func (s *Store) presignable(batch []*appendReq) ([]Reading, bool) {
	if s.presigner == nil || s.pending.Load() != 0 {
		return nil, false
	}
	size := 0
	for _, req := range batch {
		size += len(req.value)
	}
	if size > presignMaxBytes {
		return nil, false
	}
	readings := make([]Reading, len(batch))
	for i, req := range batch {
		r, part, err := decodeReading(req.seq, req.value)
		if err == nil {
			r.Part, err = s.partName(part)
		}
		if err != nil {
			s.log.Error("decode reading to presign", "seq", req.seq, "err", err)
			return nil, false
		}
		readings[i] = r
	}
	return readings, true
}

// commitPresigned offers the whole batch to the presigner and, if it signs
// it, commits the signed messages in one synced transaction. It reports
// false if the batch must be stored unsigned instead.
func (s *Store) commitPresigned(ctx context.Context, batch []*appendReq) (bool, error) {
	readings, ok := s.presignable(batch)
	if !ok {
		return false, nil
	}
	msgs, chains, err := s.presigner.Presign(ctx, readings)
	if err != nil {
		s.log.Warn("presign failed; storing the readings unsigned", "first_seq", batch[0].seq, "count", len(batch), "err", err)
		return false, nil
	}
	if msgs == nil {
		return false, nil
	}
	if !matches(msgs, batch) {
		s.presigner.Committed(msgs, errPresignMismatch)
		s.log.Error("presigned messages do not match the readings; storing the readings unsigned", "readings", len(batch), "messages", len(msgs))
		return false, nil
	}
	err = s.commitSignedTxn(batch[len(batch)-1].seq, msgs, chains)
	s.presigner.Committed(msgs, err)
	if errors.Is(err, errPresignTooBig) {
		return false, nil
	}
	return true, err
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
	if err == nil {
		err = putChains(txn, chains)
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
	s.m.commits.Inc()
	s.m.batchSize.Observe(float64(len(msgs)))
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
