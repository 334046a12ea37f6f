package storage

import (
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// Chain states of presigned batches are written lazily. Each presigned
// commit advances the chain of every MQTT client in it, and writing those
// states (~170 bytes each, into the WAL and again into every L0 flush)
// cost as much as a third of the signed message per reading at 2,000
// readings/s. They are redundant with the messages themselves, whose IDs
// hold the chain's last reference, so the store writes a chain's state
// with its first message and then at most every chainSaveInterval (and
// before retention deletes or Close), and recovers the newer references
// from the log at Open.
//
// Invariant: every own chain's stored state covers all of its messages
// below the position stored under keyChainsPos; recoverChains reads the
// messages from there on.

// chainSaveInterval bounds how long chain states stay deferred, and so how
// much of the log Open reads after a crash (about 2,000 messages at
// 2,000 readings/s).
const chainSaveInterval = time.Second

// deferredChains is the store's record of deferred chain states, guarded
// by signMu.
type deferredChains struct {
	stored  map[string]string             // chain key → chain ID of states stored (or recovered) by this process
	unsaved map[string]streamr.ChainState // newer than stored, not written yet
	savedAt time.Time                     // last write of every unsaved state
}

// putPresignedChains writes the states of chains a presigned batch ending
// before log position end advanced, or defers those already stored, and
// returns what to record once the transaction is committed.
func (s *Store) putPresignedChains(txn *badger.Txn, chains map[string]streamr.ChainState, end uint64, now time.Time) (func(), error) {
	d := &s.chains
	due := now.Sub(d.savedAt) >= chainSaveInterval
	write := make(map[string]streamr.ChainState, len(chains))
	deferred := make(map[string]streamr.ChainState, len(chains))
	for k, st := range chains {
		if !due && d.stored[k] == st.ID {
			deferred[k] = st
		} else {
			write[k] = st
		}
	}
	if due {
		if err := s.putUnsaved(txn, end); err != nil {
			return nil, err
		}
	}
	if err := putChains(txn, write); err != nil {
		return nil, err
	}
	return func() {
		if due {
			s.savedUnsaved(now)
		}
		s.chainsStored(write)
		for k, st := range deferred {
			d.unsaved[k] = st
		}
	}, nil
}

// putUnsaved writes every deferred state and the position they now cover.
func (s *Store) putUnsaved(txn *badger.Txn, end uint64) error {
	if err := putChains(txn, s.chains.unsaved); err != nil {
		return err
	}
	if err := txn.Set(keyChainsPos, putU64(end)); err != nil {
		return fmt.Errorf("store chain states position: %w", err)
	}
	return nil
}

// savedUnsaved records that putUnsaved's transaction was committed.
func (s *Store) savedUnsaved(now time.Time) {
	s.chainsStored(s.chains.unsaved)
	s.chains.savedAt = now
}

// chainsStored records states committed in their own right: a deferred
// state of the same chain is older.
func (s *Store) chainsStored(states map[string]streamr.ChainState) {
	for k, st := range states {
		s.chains.stored[k] = st.ID
		delete(s.chains.unsaved, k)
	}
}

// unsavedChain returns a deferred state, newer than the stored one.
func (s *Store) unsavedChain(key string) (streamr.ChainState, bool) {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	st, ok := s.chains.unsaved[key]
	return st, ok
}

// saveChains writes the deferred states (synced).
func (s *Store) saveChains() error {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	return s.saveUnsaved(time.Now())
}

// saveUnsaved writes the deferred states, and then the position they
// cover, in as few synced transactions as fit. The caller holds signMu.
func (s *Store) saveUnsaved(now time.Time) error {
	if len(s.chains.unsaved) == 0 {
		return nil
	}
	ws, err := chainWrites(s.chains.unsaved)
	if err == nil {
		err = s.putSplit(ws, write{key: keyChainsPos, value: putU64(s.nextPos)})
	}
	if err != nil {
		return fmt.Errorf("save deferred chain states: %w", err)
	}
	s.savedUnsaved(now)
	return nil
}

// saveDueApart writes the deferred states in transactions of their own
// when they are due and too many to share a presigned commit (a quarter of
// a transaction: the chunk's messages take about half). The caller holds
// signMu.
func (s *Store) saveDueApart(now time.Time) error {
	if now.Sub(s.chains.savedAt) < chainSaveInterval || len(s.chains.unsaved) == 0 {
		return nil
	}
	ws, err := chainWrites(s.chains.unsaved)
	if err != nil {
		return err
	}
	l := s.txnLimits()
	if c := l.cost(ws...); c.size < l.maxSize/4 && c.count < l.maxCount/4 {
		return nil
	}
	return s.saveUnsaved(now)
}

// recoverChains brings the stored chain states up to the messages logged
// after keyChainsPos (written by presigned commits whose states were
// deferred when the process ended), then stores them and moves
// keyChainsPos to the end of the log. Messages other publishers signed
// (reading 0) are skipped: their positions are saved with them.
func (s *Store) recoverChains() error {
	s.chains.stored = make(map[string]string)
	s.chains.unsaved = make(map[string]streamr.ChainState)
	var from uint64
	var advanced map[string]streamr.ChainState
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if from, err = getCounter(txn, keyChainsPos, s.nextPos); err != nil || from >= s.nextPos {
			return err
		}
		advanced, err = s.chainsAfter(txn, from)
		return err
	})
	if err != nil {
		return err
	}
	// The states go before the position: a crash between the
	// transactions reads the same messages again.
	ws, err := chainWrites(advanced)
	if err == nil {
		err = s.putSplit(ws, write{key: keyChainsPos, value: putU64(s.nextPos)})
	}
	if err != nil {
		return err
	}
	s.chainsStored(advanced)
	if len(advanced) > 0 {
		s.log.Info("recovered chain states from the log", "chains", len(advanced), "from_pos", from, "to_pos", s.nextPos)
	}
	return nil
}

// chainsAfter returns the states of own chains advanced to the newest of
// their messages at log positions from pos on.
func (s *Store) chainsAfter(txn *badger.Txn, pos uint64) (map[string]streamr.ChainState, error) {
	byID, err := ownChainKeys(txn)
	if err != nil {
		return nil, err
	}
	out := make(map[string]streamr.ChainState)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLog}, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Seek(logKey(pos)); it.Valid(); it.Next() {
		l, err := s.readLogged(it.Item(), false)
		if err != nil {
			return nil, err
		}
		if l.ReadingSeq == 0 {
			continue
		}
		id, _, err := streamr.UnmarshalHeader(l.Encoded)
		if err != nil {
			return nil, fmt.Errorf("log entry %d: %w", l.Pos, err)
		}
		c, ok := byID[id.MsgChainID]
		if !ok {
			// A chain's first message is stored with its state, so this
			// is a chain replaced since (its key now names another):
			// nothing to advance.
			continue
		}
		if ref := (streamr.MessageRef{Timestamp: id.Timestamp, SequenceNumber: id.SequenceNumber}); c.state.Last == nil || ref.Compare(*c.state.Last) > 0 {
			c.state.Last = &ref
			out[c.key] = c.state
		}
	}
	return out, nil
}

type keyedChain struct {
	key   string
	state streamr.ChainState
}

// ownChainKeys maps chain IDs to the stored chain states. Undecodable
// values are not chain states of this gateway's signer and are skipped.
func ownChainKeys(txn *badger.Txn) (map[string]*keyedChain, error) {
	out := make(map[string]*keyedChain)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindChain}, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var st streamr.ChainState
		if err := it.Item().Value(st.UnmarshalBinary); err != nil || st.ID == "" {
			continue
		}
		out[st.ID] = &keyedChain{key: string(it.Item().Key()[1:]), state: st}
	}
	return out, nil
}
