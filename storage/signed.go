package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// Signed is a signed message ready to be stored in place of its reading.
// Msg's ID gives the part and the resend order; Encoded, its protobuf
// encoding, is stored and returned verbatim (nil: marshal Msg).
type Signed struct {
	ReadingSeq uint64 // the pending reading it was made from
	streamr.Envelope
}

// Logged is a stored signed message at its log position.
type Logged struct {
	Pos        uint64               // log position: increasing in commit order, never reused
	Part       streamr.StreamPartID // stream part of the message
	ReadingSeq uint64               // the reading the message was made from
	Encoded    []byte               // protobuf StreamMessage
}

// CommitSigned stores msgs and the chains' states, and deletes the pending
// readings the messages came from, in one synced transaction: after a crash
// either all of it is stored or none. Each message gets the next log
// position. It fails with ErrNotPending if a reading is not pending, and
// with an error wrapping badger.ErrTxnTooBig if the batch does not fit one
// transaction (about 600 kB with the store's 4 MB memtables): pass fewer
// messages. Signing is never refused for quota.
func (s *Store) CommitSigned(ctx context.Context, msgs []Signed, chains map[string]streamr.ChainState) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit signed messages: %w", err)
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.space.secure(); err != nil {
		s.m.diskWaits.WithLabelValues("sign").Inc()
		return fmt.Errorf("commit signed messages: %w", err)
	}
	s.signMu.Lock()
	defer s.signMu.Unlock()
	start := time.Now()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	added, err := s.putSigned(txn, msgs)
	if err != nil {
		return err
	}
	if err := putChains(txn, chains); err != nil {
		return err
	}
	if err := s.putSignCounters(txn, s.nextPos+uint64(len(msgs)), s.signedBytes+added); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit %d signed messages: %w", len(msgs), err)
	}
	s.nextPos += uint64(len(msgs))
	s.signedBytes += added
	s.chainsStored(chains)
	s.pending.Add(-int64(len(msgs)))
	s.m.signSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// putSigned writes the log entries and index keys of msgs, at positions from
// s.nextPos, deletes their readings and returns their total encoded size.
func (s *Store) putSigned(txn *badger.Txn, msgs []Signed) (int64, error) {
	var total int64
	for i, sm := range msgs {
		if err := checkPending(txn, sm.ReadingSeq); err != nil {
			return 0, err
		}
		id := &sm.Msg.ID
		part, err := s.partNumber(id.StreamPart())
		if err != nil {
			return 0, err
		}
		enc := sm.Encoded
		if enc == nil {
			if enc, err = sm.Msg.Marshal(); err != nil {
				return 0, fmt.Errorf("encode message of reading %d: %w", sm.ReadingSeq, err)
			}
		}
		pos := s.nextPos + uint64(i)
		err = errors.Join(
			putMessage(txn, pos, part, sm.ReadingSeq, id, enc),
			txn.Delete(readingKey(sm.ReadingSeq)),
		)
		if err != nil {
			return 0, fmt.Errorf("store message %s of reading %d: %w", id.Ref(), sm.ReadingSeq, err)
		}
		total += int64(len(enc))
	}
	return total, nil
}

// putMessage writes one message's log entry and its index key.
func putMessage(txn *badger.Txn, pos uint64, part uint32, readingSeq uint64, id *streamr.MessageID, enc []byte) error {
	return errors.Join(
		txn.Set(logKey(pos), encodeLogValue(part, readingSeq, enc)),
		txn.Set(indexKey(part, id.Timestamp, id.SequenceNumber, id.PublisherID, id.MsgChainID), putU64(pos)),
	)
}

func checkPending(txn *badger.Txn, seq uint64) error {
	_, err := txn.Get(readingKey(seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("reading %d: %w", seq, ErrNotPending)
	}
	if err != nil {
		return fmt.Errorf("look up reading %d: %w", seq, err)
	}
	return nil
}

func putChains(txn *badger.Txn, chains map[string]streamr.ChainState) error {
	for key, st := range chains {
		b, err := st.MarshalBinary()
		if err != nil {
			return fmt.Errorf("encode chain state %q: %w", key, err)
		}
		if err := txn.Set(chainKey(key), b); err != nil {
			return fmt.Errorf("store chain state %q: %w", key, err)
		}
	}
	return nil
}

func (s *Store) putSignCounters(txn *badger.Txn, nextPos uint64, signedBytes int64) error {
	err := errors.Join(
		txn.Set(keyNextPos, putU64(nextPos)),
		txn.Set(keySignedBytes, putU64(uint64(signedBytes))),
	)
	if err != nil {
		return fmt.Errorf("store log counters: %w", err)
	}
	return nil
}

func (s *Store) signedTotal() int64 {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	return s.signedBytes
}

// ChainState returns the state saved under key by CommitSigned.
func (s *Store) ChainState(key string) (streamr.ChainState, bool, error) {
	if st, ok := s.unsavedChain(key); ok {
		return st, true, nil
	}
	var st streamr.ChainState
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chainKey(key))
		if err != nil {
			return err
		}
		return item.Value(st.UnmarshalBinary)
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return streamr.ChainState{}, false, nil
	}
	if err != nil {
		return streamr.ChainState{}, false, fmt.Errorf("read chain state %q: %w", key, err)
	}
	return st, true, nil
}

// Messages calls fn with each stored message of part whose timestamp is
// within [from, to] (ms), in (timestamp, sequence number, publisher, chain
// ID) order, from one consistent snapshot. encoded is valid only during the
// call. An error from fn stops the walk and is returned.
func (s *Store) Messages(part streamr.StreamPartID, from, to int64, fn func(encoded []byte) error) error {
	n, ok := s.parts.Load(part)
	if !ok || from > to {
		return nil
	}
	num := n.(uint32)
	end := indexEndKey(num, to)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: indexPrefix(num), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(indexTimeKey(num, from)); it.Valid() && slices.Compare(it.Item().Key(), end) < 0; it.Next() {
			if err := s.visitIndexed(txn, it.Item(), fn); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("messages of %s from %d to %d: %w", part, from, to, err)
	}
	return nil
}

func (s *Store) visitIndexed(txn *badger.Txn, idx *badger.Item, fn func([]byte) error) error {
	v, err := idx.ValueCopy(nil)
	if err != nil || len(v) != 8 {
		return errors.Join(fmt.Errorf("index entry %x: bad value", idx.Key()), err)
	}
	pos := getU64(v)
	item, err := txn.Get(logKey(pos))
	if err != nil {
		return fmt.Errorf("log entry %d of index entry %x: %w", pos, idx.Key(), err)
	}
	return item.Value(func(b []byte) error {
		_, _, enc, err := decodeLogValue(pos, b)
		if err != nil {
			return err
		}
		return fn(enc)
	})
}

// After returns up to max signed messages with log position > pos, in log
// order.
func (s *Store) After(pos uint64, max int) ([]Logged, error) {
	var out []Logged
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}, PrefetchValues: true, PrefetchSize: min(max, 100)})
		defer it.Close()
		for it.Seek(logKey(pos + 1)); it.Valid() && len(out) < max; it.Next() {
			l, err := s.readLogged(it.Item())
			if err != nil {
				return err
			}
			out = append(out, l)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list signed messages after position %d: %w", pos, err)
	}
	return out, nil
}

func (s *Store) readLogged(item *badger.Item) (Logged, error) {
	l := Logged{Pos: getU64(item.Key()[1:])}
	err := item.Value(func(b []byte) error {
		part, seq, enc, err := decodeLogValue(l.Pos, b)
		if err != nil {
			return err
		}
		l.ReadingSeq, l.Encoded = seq, append([]byte(nil), enc...)
		l.Part, err = s.partName(part)
		return err
	})
	return l, err
}

// Parts returns the stream parts that have stored signed messages, sorted
// by their string form.
func (s *Store) Parts() ([]streamr.StreamPartID, error) {
	var out []streamr.StreamPartID
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindIndex}})
		defer it.Close()
		s.partNames.Range(func(k, v any) bool {
			it.Seek(indexPrefix(k.(uint32)))
			if it.ValidForPrefix(indexPrefix(k.(uint32))) {
				out = append(out, v.(streamr.StreamPartID))
			}
			return true
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list stream parts: %w", err)
	}
	slices.SortFunc(out, func(a, b streamr.StreamPartID) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// Usage returns the disk space used by the LSM tree (with its WAL) and by
// the value log, as last measured (at most a second old while appending).
func (s *Store) Usage() (lsm, vlog int64) { return s.space.usage() }
