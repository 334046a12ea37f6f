package storage

import (
	"context"
	"encoding/binary"
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
// readings the messages came from, in one synced transaction — or, if the
// batch does not fit Badger's transaction size limit, in several, split
// between messages (signedCommit says why that is safe). Each message gets
// the next log position. It fails with ErrNotPending if a reading is not
// pending. After an error part of the batch may be stored: the caller must
// reload its chain states (ChainState) and the pending readings. Signing is
// never refused for quota.
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
	c := s.newSignedCommit(chains)
	defer c.t.discard()
	for i := range msgs {
		if err := c.add(&msgs[i]); err != nil {
			return err
		}
	}
	if err := c.finish(); err != nil {
		return fmt.Errorf("commit %d signed messages: %w", len(msgs), err)
	}
	s.m.signSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// putMessage writes one message's log entry and its index key.
func putMessage(txn *badger.Txn, pos uint64, part uint32, readingSeq uint64, id *streamr.MessageID, enc []byte) error {
	ws := messageWrites(pos, part, readingSeq, id, enc)
	if err := txn.Set(ws[0].key, ws[0].value); err != nil {
		return err
	}
	return txn.Set(ws[1].key, ws[1].value)
}

// messageWrites are one message's log entry and index key.
func messageWrites(pos uint64, part uint32, readingSeq uint64, id *streamr.MessageID, enc []byte) [2]write {
	return indexedWrites(pos, part, readingSeq, indexKey(part, id.Timestamp, id.SequenceNumber, id.PublisherID, id.MsgChainID), enc)
}

// indexedWrites is messageWrites with the index key already made. The log
// key, log value and position share one allocation: a stored message
// costs the heap two objects (this and the index key), not four.
func indexedWrites(pos uint64, part uint32, readingSeq uint64, ik, enc []byte) [2]write {
	const keyLen, posLen = 1 + 8, 8
	b := make([]byte, 0, keyLen+logHeaderLen+len(enc)+posLen)
	b = binary.BigEndian.AppendUint64(append(b, kindLog), pos)
	b = binary.BigEndian.AppendUint32(b, part)
	b = binary.BigEndian.AppendUint64(b, readingSeq)
	b = append(b, enc...)
	b = binary.BigEndian.AppendUint64(b, pos)
	valueEnd := len(b) - posLen
	return [2]write{
		{key: b[:keyLen:keyLen], value: b[keyLen:valueEnd:valueEnd]},
		{key: ik, value: b[valueEnd:]},
	}
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
		w, err := chainWrite(key, st)
		if err != nil {
			return err
		}
		if err := txn.Set(w.key, w.value); err != nil {
			return fmt.Errorf("store chain state %q: %w", key, err)
		}
	}
	return nil
}

// chainWrite is the write storing a chain state under key.
func chainWrite(key string, st streamr.ChainState) (write, error) {
	b, err := st.MarshalBinary()
	if err != nil {
		return write{}, fmt.Errorf("encode chain state %q: %w", key, err)
	}
	return write{key: chainKey(key), value: b}, nil
}

// chainWrites are the writes storing states.
func chainWrites(states map[string]streamr.ChainState) ([]write, error) {
	out := make([]write, 0, len(states))
	for key, st := range states {
		w, err := chainWrite(key, st)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

func (s *Store) putSignCounters(txn *badger.Txn, nextPos uint64, signedBytes int64) error {
	for _, w := range signCounters(nextPos, signedBytes) {
		if err := txn.Set(w.key, w.value); err != nil {
			return fmt.Errorf("store log counters: %w", err)
		}
	}
	return nil
}

// signCounters are the writes storing the log counters.
func signCounters(nextPos uint64, signedBytes int64) []write {
	return []write{{key: keyNextPos, value: putU64(nextPos)}, {key: keySignedBytes, value: putU64(uint64(signedBytes))}}
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
// order, each with its bytes: those of other publishers, kept for
// [[store]] rules (ReadingSeq 0), too. Apps following the log read them.
func (s *Store) After(pos uint64, max int) ([]Logged, error) {
	return s.after(pos, max, true)
}

// OwnAfter is After for a reader of this gateway's own messages (the
// forwarder): those of other publishers come without Encoded, their
// positions only, so it can step over them without copying their bytes —
// a storing gateway logs thousands a second.
func (s *Store) OwnAfter(pos uint64, max int) ([]Logged, error) {
	return s.after(pos, max, false)
}

func (s *Store) after(pos uint64, max int, received bool) ([]Logged, error) {
	var out []Logged
	err := s.db.View(func(txn *badger.Txn) error {
		// No prefetch: a log value (under valueThreshold) lives in the LSM
		// tree and readLogged copies only the bytes it keeps; prefetching
		// would copy every value first, received ones the forwarder skips.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}})
		defer it.Close()
		for it.Seek(logKey(pos + 1)); it.Valid() && len(out) < max; it.Next() {
			l, err := s.readLogged(it.Item(), received)
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

// readLogged reads a log entry; the bytes of other publishers' messages
// (reading 0) only if received.
func (s *Store) readLogged(item *badger.Item, received bool) (Logged, error) {
	l := Logged{Pos: getU64(item.Key()[1:])}
	err := item.Value(func(b []byte) error {
		part, seq, enc, err := decodeLogValue(l.Pos, b)
		if err != nil {
			return err
		}
		l.ReadingSeq = seq
		if seq != 0 || received {
			l.Encoded = append([]byte(nil), enc...)
		}
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
