package storage

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// StoreReceived stores messages from the overlay with the next log
// positions, and the given chain states (the receiver's positions), in one
// synced transaction, skipping messages already stored (same stream part,
// timestamp, sequence number, publisher and chain). It returns how many
// were new. Like signed messages, received ones count against
// retention but are never refused for quota: they are not acknowledged to
// anyone.
func (s *Store) StoreReceived(ctx context.Context, msgs []streamr.Envelope, chains map[string]streamr.ChainState) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store received messages: %w", err)
	}
	if s.closed.Load() {
		return 0, ErrClosed
	}
	s.signMu.Lock()
	defer s.signMu.Unlock()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	var added int64
	stored := 0
	for _, r := range msgs {
		id := &r.Msg.ID
		part, err := s.partNumber(id.StreamPart())
		if err != nil {
			return 0, err
		}
		_, err = txn.Get(indexKey(part, id.Timestamp, id.SequenceNumber, id.PublisherID, id.MsgChainID))
		switch {
		case err == nil:
			continue // a duplicate
		case !errors.Is(err, badger.ErrKeyNotFound):
			return 0, fmt.Errorf("look up message %s: %w", id.Ref(), err)
		}
		if err := putMessage(txn, s.nextPos+uint64(stored), part, 0, id, r.Encoded); err != nil {
			return 0, fmt.Errorf("store received message %s of %s: %w", id.Ref(), id.StreamPart(), err)
		}
		stored++
		added += int64(len(r.Encoded))
	}
	if stored == 0 && len(chains) == 0 {
		return 0, nil
	}
	if err := putChains(txn, chains); err != nil {
		return 0, err
	}
	if err := s.putSignCounters(txn, s.nextPos+uint64(stored), s.signedBytes+added); err != nil {
		return 0, err
	}
	if err := txn.Commit(); err != nil {
		return 0, fmt.Errorf("commit %d received messages: %w", stored, err)
	}
	s.nextPos += uint64(stored)
	s.signedBytes += added
	return stored, nil
}

// SaveChainStates stores states under their keys in one synced
// transaction (a subscriber's delivered positions, for example).
func (s *Store) SaveChainStates(ctx context.Context, states map[string]streamr.ChainState) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error { return putChains(txn, states) })
	if err != nil {
		return fmt.Errorf("save chain states: %w", err)
	}
	return nil
}
