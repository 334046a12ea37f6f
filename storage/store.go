package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// Store is a Badger database holding pending readings, signed messages and
// chain states. Its methods are safe for concurrent use; Run must be running
// for Append to complete.
type Store struct {
	opts Options
	db   *badger.DB
	log  *slog.Logger
	m    *metrics

	mu         sync.Mutex // guards the fields below
	nextSeq    uint64     // next reading sequence number to hand out
	queue      []*appendReq
	queueBytes int  // encoded bytes of the queued readings
	stopped    bool // Run has ended or Close was called: no more appends
	wake       chan struct{}

	partMu    sync.Mutex // serialises part number assignment
	parts     sync.Map   // streamr.StreamPartID → uint32
	partNames sync.Map   // uint32 → streamr.StreamPartID

	signMu      sync.Mutex // serialises CommitSigned and retention deletes
	nextPos     uint64     // next log position
	signedBytes int64      // encoded bytes of stored signed messages
	chains      deferredChains

	presigner Presigner // signs batches in the group commit; nil: store readings pending
	flight    *flight   // the presigned commit running; committer goroutine only

	arrivals arrivalRate // of queued readings, for the commit window

	pending atomic.Int64 // pending readings stored
	space   spaceTracker
	running atomic.Bool
	closed  atomic.Bool
}

// Open opens (or creates) the database in opts.Dir with Pi-sized Badger
// options and synced writes.
func Open(opts Options) (*Store, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("storage options: %w", err)
	}
	if err := CheckFree(opts.Dir, opts.MinFreeBytes); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create storage dir: %w", err)
	}
	db, err := badger.Open(opts.badgerOptions())
	if err != nil && dirLocked(opts.Dir) {
		return nil, fmt.Errorf("open badger database %s: %w: %v", opts.Dir, ErrLocked, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open badger database %s: %w", opts.Dir, err)
	}
	s := &Store{
		opts: opts,
		db:   db,
		log:  opts.Logger.With("component", "storage"),
		wake: make(chan struct{}, 1),
	}
	s.space.dir, s.space.minFree = opts.Dir, opts.MinFreeBytes
	if err := s.load(); err != nil {
		return nil, errors.Join(fmt.Errorf("storage %s: %w", opts.Dir, err), db.Close())
	}
	if err := s.replayIntent(); err != nil {
		return nil, errors.Join(fmt.Errorf("storage %s: %w", opts.Dir, err), db.Close())
	}
	if err := s.recoverChains(); err != nil {
		return nil, errors.Join(fmt.Errorf("storage %s: recover chain states: %w", opts.Dir, err), db.Close())
	}
	if s.m, err = newMetrics(opts.Registerer, s); err != nil {
		return nil, errors.Join(fmt.Errorf("storage metrics: %w", err), db.Close())
	}
	if err := s.space.measure(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	s.space.holdReserve()
	s.log.Info("storage opened", "dir", opts.Dir, "next_seq", s.nextSeq, "next_pos", s.nextPos,
		"pending", s.pending.Load(), "signed_bytes", s.signedBytes)
	return s, nil
}

// Close closes the database. Appends still queued (Run not running) fail
// with ErrClosed. A second call returns ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	s.stop(ErrClosed)
	saveErr := s.saveChains()
	if s.space.releaseReserve() {
		s.log.Warn("disk nearly full: released the flush reserve for closing the database", "dir", s.opts.Dir)
	}
	if err := s.db.Close(); err != nil {
		return errors.Join(saveErr, fmt.Errorf("close badger database %s: %w", s.opts.Dir, err))
	}
	return saveErr
}

// load reads the metadata counters and part dictionary, writing the schema
// version into a new database.
func (s *Store) load() error {
	return s.db.Update(func(txn *badger.Txn) error {
		if err := checkSchema(txn); err != nil {
			return err
		}
		var err error
		if s.nextSeq, err = getCounter(txn, keyNextSeq, 1); err != nil {
			return err
		}
		if s.nextPos, err = getCounter(txn, keyNextPos, 1); err != nil {
			return err
		}
		signed, err := getCounter(txn, keySignedBytes, 0)
		if err != nil {
			return err
		}
		s.signedBytes = int64(signed)
		if err := s.loadParts(txn); err != nil {
			return err
		}
		n, err := countPrefix(txn, []byte{kindReading})
		s.pending.Store(n)
		return err
	})
}

func checkSchema(txn *badger.Txn) error {
	item, err := txn.Get(keySchema)
	if errors.Is(err, badger.ErrKeyNotFound) {
		if n, err := countPrefix(txn, nil); err != nil || n > 0 {
			return errors.Join(errors.New("database has data but no schema version: not a Tributary store"), err)
		}
		return txn.Set(keySchema, putU64(schemaVersion))
	}
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil || len(v) != 8 {
		return errors.Join(fmt.Errorf("schema version value of %d bytes, want 8", len(v)), err)
	}
	if got := getU64(v); got != schemaVersion {
		return fmt.Errorf("database has schema version %d; this build reads only version %d (newer software wrote it?)", got, schemaVersion)
	}
	return nil
}

// getCounter reads a uint64 metadata value, or def when it is absent.
func getCounter(txn *badger.Txn, key []byte, def uint64) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return def, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read metadata %q: %w", key, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, fmt.Errorf("read metadata %q: %w", key, err)
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("metadata %q: value of %d bytes, want 8", key, len(v))
	}
	return getU64(v), nil
}

func countPrefix(txn *badger.Txn, prefix []byte) (int64, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var n int64
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n, nil
}

func (s *Store) loadParts(txn *badger.Txn) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindPart}, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		name := string(it.Item().Key()[1:])
		part, err := streamr.ParseStreamPartID(name)
		if err != nil {
			return fmt.Errorf("part dictionary entry %q: %w", name, err)
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil || len(v) != 8 {
			return errors.Join(fmt.Errorf("part dictionary entry %q: bad value", name), err)
		}
		n := uint32(getU64(v))
		s.parts.Store(part, n)
		s.partNames.Store(n, part)
	}
	return nil
}

// partNumber returns the number standing for part in keys and values,
// assigning and persisting (synced) a new one on first use.
func (s *Store) partNumber(part streamr.StreamPartID) (uint32, error) {
	if n, ok := s.parts.Load(part); ok {
		return n.(uint32), nil
	}
	s.partMu.Lock()
	defer s.partMu.Unlock()
	if n, ok := s.parts.Load(part); ok {
		return n.(uint32), nil
	}
	var n uint32
	err := s.db.Update(func(txn *badger.Txn) error {
		next, err := getCounter(txn, keyNextPart, 0)
		if err != nil {
			return err
		}
		n = uint32(next)
		if err := txn.Set(partKey(part.String()), putU64(next)); err != nil {
			return err
		}
		return txn.Set(keyNextPart, putU64(next+1))
	})
	if err != nil {
		return 0, fmt.Errorf("add stream part %s to dictionary: %w", part, err)
	}
	s.parts.Store(part, n)
	s.partNames.Store(n, part)
	return n, nil
}

func (s *Store) partName(n uint32) (streamr.StreamPartID, error) {
	p, ok := s.partNames.Load(n)
	if !ok {
		return streamr.StreamPartID{}, fmt.Errorf("part number %d is not in the dictionary", n)
	}
	return p.(streamr.StreamPartID), nil
}
