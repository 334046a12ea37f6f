package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Badger refuses a transaction bigger than 15 % of a memtable
// (badger.ErrTxnTooBig), and the memtables are kept small for the heap, so
// a writer whose batch depends on its input (messages, chain states,
// session records, deletions) commits it through a txnSplit: as few
// synced transactions as the limit allows, split only between groups.

// write is one key written (or deleted) by a transaction.
type write struct {
	key, value []byte
	del        bool
}

// txnSplit is a sequence of synced write transactions that a batch is
// written through. It counts each transaction's size as Badger does
// (Txn.checkSize), so a writer can ask whether a group of writes, which
// must share a transaction, fits before writing any of it. Not safe for
// concurrent use.
type txnSplit struct {
	txnLimits
	db          *badger.DB
	txn         *badger.Txn
	size, count int64 // of the open transaction
	// committed, if set, runs once the open transaction is committed
	// (its writer's bookkeeping), then is cleared.
	committed func()
}

func (s *Store) newSplit() *txnSplit {
	t := &txnSplit{txnLimits: s.txnLimits(), db: s.db}
	t.open()
	return t
}

// txnOverhead is what Badger counts in a new write transaction: the entry
// that marks its end ("!badger!txn", newTransaction in txn.go).
var txnOverhead = txnCost{size: int64(len("!badger!txn") + 10), count: 1}

// open opens the next transaction.
func (t *txnSplit) open() {
	t.txn = t.db.NewTransaction(true)
	t.size, t.count = txnOverhead.size, txnOverhead.count
}

// txnLimits are Badger's transaction size limits.
type txnLimits struct {
	threshold         int64 // values this big go to the value log
	maxSize, maxCount int64 // a transaction stays below both
}

func (s *Store) txnLimits() txnLimits {
	return txnLimits{threshold: s.opts.valueThreshold, maxSize: s.db.MaxBatchSize(), maxCount: s.db.MaxBatchCount()}
}

// txnCost is what writes add to a transaction, as Badger counts it.
type txnCost struct{ size, count int64 }

func (c txnCost) plus(o txnCost) txnCost { return txnCost{c.size + o.size, c.count + o.count} }

// cost returns what ws add to a transaction: the key, the value or a
// value-log pointer, two meta bytes and ten bytes of key version each.
func (l txnLimits) cost(ws ...write) txnCost {
	var c txnCost
	for _, w := range ws {
		v := int64(len(w.value))
		if v >= l.threshold {
			v = 12
		}
		c.size += int64(len(w.key)) + v + 2 + 10
		c.count++
	}
	return c
}

// fits reports whether writes costing c fit the open transaction.
func (t *txnSplit) fits(c txnCost) bool {
	return t.count+c.count < t.maxCount && t.size+c.size < t.maxSize
}

// empty reports whether nothing was written to the open transaction.
func (t *txnSplit) empty() bool { return t.count == txnOverhead.count }

// put writes ws to the open transaction; the caller checked that they fit.
func (t *txnSplit) put(ws ...write) error {
	for _, w := range ws {
		var err error
		if w.del {
			err = t.txn.Delete(w.key)
		} else {
			err = t.txn.Set(w.key, w.value)
		}
		if err != nil {
			return fmt.Errorf("write key %q: %w", w.key, err)
		}
	}
	c := t.cost(ws...)
	t.size, t.count = t.size+c.size, t.count+c.count
	return nil
}

// putOrNext writes ws to the open transaction, first committing it and
// opening the next if they do not fit. Groups too big for any transaction
// fail with badger.ErrTxnTooBig.
func (t *txnSplit) putOrNext(ws ...write) error {
	c := t.cost(ws...)
	if !t.fits(c) && !t.empty() {
		if err := t.next(); err != nil {
			return err
		}
	}
	if !t.fits(c) {
		return fmt.Errorf("%d writes of %d bytes: %w", c.count, c.size, badger.ErrTxnTooBig)
	}
	return t.put(ws...)
}

// next commits the open transaction and opens the next one.
func (t *txnSplit) next() error {
	if err := t.commit(); err != nil {
		return err
	}
	t.open()
	return nil
}

// commit commits the open transaction (synced, as the store's writes are).
func (t *txnSplit) commit() error {
	if err := t.txn.Commit(); err != nil {
		return err
	}
	if f := t.committed; f != nil {
		t.committed = nil
		f()
	}
	return nil
}

// discard drops what the open transaction holds; deferred by every user.
func (t *txnSplit) discard() { t.txn.Discard() }

// putSplit writes independent writes and then final, in as few synced
// transactions as fit: a crash may keep any prefix of writes, but final is
// stored only with (after) all of them.
func (s *Store) putSplit(writes []write, final ...write) error {
	t := s.newSplit()
	defer t.discard()
	for _, w := range writes {
		if err := t.putOrNext(w); err != nil {
			return err
		}
	}
	if len(final) > 0 {
		if err := t.putOrNext(final...); err != nil {
			return err
		}
	}
	if err := t.commit(); err != nil {
		return fmt.Errorf("commit %d writes: %w", len(writes)+len(final), err)
	}
	return nil
}

// putAtomic writes ws all or nothing. A batch that fits one transaction
// takes one. A bigger one is first stored whole as one value (in the
// value log: its transaction holds only a pointer), then applied through
// a txnSplit whose last transaction deletes it; Open applies a batch
// found stored (replayIntent), so a crash in between still applies all
// of it. Later batches are committed only after putAtomic returns, so
// applying it again cannot undo a newer write.
func (s *Store) putAtomic(ws []write) error {
	l := s.txnLimits()
	if c := l.cost(ws...).plus(txnOverhead); c.size < l.maxSize && c.count < l.maxCount {
		return s.putSplit(ws)
	}
	intent := encodeWrites(ws)
	if int64(len(intent)) > s.db.Opts().ValueLogFileSize {
		return fmt.Errorf("batch of %d writes, %d bytes encoded: larger than a value log file (%d bytes)", len(ws), len(intent), s.db.Opts().ValueLogFileSize)
	}
	if err := s.putSplit(nil, write{key: keyIntent, value: intent}); err != nil {
		return fmt.Errorf("store batch of %d writes: %w", len(ws), err)
	}
	return s.putSplit(ws, write{key: keyIntent, del: true})
}

// replayIntent applies a batch putAtomic stored and did not finish.
func (s *Store) replayIntent() error {
	var intent []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyIntent)
		if err != nil {
			return err
		}
		intent, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read unfinished batch: %w", err)
	}
	ws, err := decodeWrites(intent)
	if err != nil {
		return fmt.Errorf("unfinished batch: %w", err)
	}
	s.log.Warn("applying a batch of writes the last run did not finish", "writes", len(ws))
	return s.putSplit(ws, write{key: keyIntent, del: true})
}

// encodeWrites lays out ws as, for each: uvarint key length, key, one
// byte (1: delete), uvarint value length, value.
func encodeWrites(ws []write) []byte {
	var b []byte
	for _, w := range ws {
		b = binary.AppendUvarint(b, uint64(len(w.key)))
		b = append(b, w.key...)
		del := byte(0)
		if w.del {
			del = 1
		}
		b = append(b, del)
		b = binary.AppendUvarint(b, uint64(len(w.value)))
		b = append(b, w.value...)
	}
	return b
}

func decodeWrites(b []byte) ([]write, error) {
	var ws []write
	field := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("write %d: bad length", len(ws))
		}
		f := b[k : k+int(n)]
		b = b[k+int(n):]
		return f, nil
	}
	for len(b) > 0 {
		key, err := field()
		if err != nil {
			return nil, err
		}
		if len(b) == 0 || b[0] > 1 {
			return nil, fmt.Errorf("write %d: bad delete flag", len(ws))
		}
		del := b[0] == 1
		b = b[1:]
		value, err := field()
		if err != nil {
			return nil, err
		}
		ws = append(ws, write{key: key, value: value, del: del})
	}
	return ws, nil
}
