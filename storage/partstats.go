package storage

import (
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// PartStats is what a stream partition holds in storage.
type PartStats struct {
	Count int64 // stored messages
	First int64 // oldest message's timestamp (ms); 0 when Count is 0
	Last  int64 // newest message's timestamp (ms)
}

// PartStats counts part's stored messages and finds their time span. It
// walks the part's index keys only (no values), from one snapshot.
func (s *Store) PartStats(part streamr.StreamPartID) (PartStats, error) {
	var st PartStats
	n, ok := s.parts.Load(part)
	if !ok {
		return st, nil
	}
	prefix := indexPrefix(n.(uint32))
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(key) < len(prefix)+8 {
				return fmt.Errorf("index key %x: too short", key)
			}
			ts := int64(binary.BigEndian.Uint64(key[len(prefix):]) ^ (1 << 63))
			if st.Count == 0 {
				st.First = ts
			}
			st.Last = ts
			st.Count++
		}
		return nil
	})
	if err != nil {
		return PartStats{}, fmt.Errorf("stats of %s: %w", part, err)
	}
	return st, nil
}
