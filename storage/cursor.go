package storage

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// kindCursor keys hold named log positions of the components that consume
// the signed log (the forwarder's per-partition progress):
//
//	K<name> → pos u64
const kindCursor = 'K'

func cursorKey(name string) []byte { return append([]byte{kindCursor}, name...) }

// Cursor returns the position saved under name, or 0 if none was.
func (s *Store) Cursor(name string) (uint64, error) {
	var pos uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(cursorKey(name))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("value is %d bytes, want 8", len(v))
			}
			pos = getU64(v)
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read cursor %q: %w", name, err)
	}
	return pos, nil
}

// SetCursors saves named positions, synced: in one transaction, or in
// several if they do not fit one (each position stands alone).
func (s *Store) SetCursors(ctx context.Context, cursors map[string]uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ws := make([]write, 0, len(cursors))
	for name, pos := range cursors {
		ws = append(ws, write{key: cursorKey(name), value: putU64(pos)})
	}
	if err := s.putSplit(ws); err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	return nil
}

// LastPos returns the log position of the newest stored message, 0 if none.
func (s *Store) LastPos() uint64 {
	s.signMu.Lock()
	defer s.signMu.Unlock()
	return s.nextPos - 1
}
