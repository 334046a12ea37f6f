package storage

import (
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// PendingCount returns how many stored readings are not yet signed.
func (s *Store) PendingCount() int64 { return s.pending.Load() }

// PendingByPart counts the stored readings that are not yet signed, per
// stream part, reading the store itself rather than the running count.
func (s *Store) PendingByPart() (map[streamr.StreamPartID]int, error) {
	counts := make(map[uint32]int)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindReading}, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				if len(v) < readingHeaderLen {
					return fmt.Errorf("reading %d: value of %d bytes is shorter than its header", getU64(it.Item().Key()[1:]), len(v))
				}
				counts[binary.BigEndian.Uint32(v)]++
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count pending readings: %w", err)
	}
	out := make(map[streamr.StreamPartID]int, len(counts))
	for n, c := range counts {
		part, err := s.partName(n)
		if err != nil {
			return nil, fmt.Errorf("count pending readings: %w", err)
		}
		out[part] = c
	}
	return out, nil
}
