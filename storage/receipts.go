package storage

import (
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// Receipts returns the stored position of each chain of publisher in part,
// ordered by chain ID; none if this node does not store them. It is what
// the node acknowledges to the publishing gateway (overlay.ReceiptSource).
// The positions are those named streamr.StoredPositions, which
// bridge.Storer writes in the same transaction as the messages up to
// them: a position never claims a message that is not stored.
func (s *Store) Receipts(part streamr.StreamPartID, publisher []byte) ([]streamr.ChainReceipt, error) {
	prefix := chainKey(streamr.PositionPrefix(streamr.StoredPositions, part, publisher))
	var out []streamr.ChainReceipt
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			chain := string(it.Item().Key()[len(prefix):])
			var st streamr.ChainState
			if err := it.Item().Value(st.UnmarshalBinary); err != nil {
				return fmt.Errorf("chain state of chain %q: %w", chain, err)
			}
			if st.Last != nil {
				out = append(out, streamr.ChainReceipt{ChainID: chain, Last: *st.Last})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("receipts of %s publisher %s: %w", part, streamr.UserID(publisher), err)
	}
	return out, nil
}
