package storage

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// StoreReceived stores messages from the overlay with the next log
// positions, and the given chain states (the receiver's positions),
// skipping messages already stored (same stream part, timestamp, sequence
// number, publisher and chain). It returns how many were new. The batch
// takes one synced transaction, or several split between messages if it
// does not fit one; the chain states go in the last, after every message,
// so a position never claims a message a crash lost (one it kept twice is
// skipped when it comes again). Like signed messages, received ones count
// against retention but are never refused for quota: they are not
// acknowledged to anyone.
func (s *Store) StoreReceived(ctx context.Context, msgs []streamr.Envelope, chains map[string]streamr.ChainState) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store received messages: %w", err)
	}
	if s.closed.Load() {
		return 0, ErrClosed
	}
	s.signMu.Lock()
	defer s.signMu.Unlock()
	t := s.newSplit()
	defer t.discard()
	r := receivedCommit{s: s, t: t, counters: t.cost(signCounters(0, 0)...)}
	for i := range msgs {
		if err := r.add(&msgs[i]); err != nil {
			return r.stored, err
		}
	}
	if r.n == 0 && len(chains) == 0 {
		return r.stored, nil
	}
	ws, err := chainWrites(chains)
	if err != nil {
		return r.stored, err
	}
	if err := r.seal(ws); err != nil {
		return r.stored, fmt.Errorf("commit %d received messages: %w", r.n, err)
	}
	return r.stored, nil
}

// receivedCommit writes a StoreReceived batch through a txnSplit.
type receivedCommit struct {
	s        *Store
	t        *txnSplit
	counters txnCost // room the log counters take in each transaction
	n        int     // new messages in the open transaction
	added    int64   // their encoded bytes
	stored   int     // new messages committed
}

// add writes m to the open transaction unless it is stored already,
// committing the transaction first if m does not fit.
func (r *receivedCommit) add(m *streamr.Envelope) error {
	s, id := r.s, &m.Msg.ID
	part, err := s.partNumber(id.StreamPart())
	if err != nil {
		return err
	}
	ik := indexKey(part, id.Timestamp, id.SequenceNumber, id.PublisherID, id.MsgChainID)
	_, err = r.t.txn.Get(ik)
	switch {
	case err == nil:
		return nil // a duplicate
	case !errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("look up message %s: %w", id.Ref(), err)
	}
	ws := indexedWrites(s.nextPos+uint64(r.n), part, 0, ik, m.Encoded)
	c := r.t.cost(ws[:]...).plus(r.counters) // the counters go with the last message
	if !r.t.fits(c) && r.n > 0 {
		if err := r.seal(nil); err != nil {
			return fmt.Errorf("commit %d received messages: %w", r.n, err)
		}
	}
	if !r.t.fits(c) {
		return fmt.Errorf("received message %s of %s: %d bytes: too big for one transaction", id.Ref(), id.StreamPart(), len(m.Encoded))
	}
	if err := r.t.put(ws[:]...); err != nil {
		return fmt.Errorf("store received message %s of %s: %w", id.Ref(), id.StreamPart(), err)
	}
	r.n++
	r.added += int64(len(m.Encoded))
	return nil
}

// seal writes the log counters and then final (in further transactions
// if they do not fit) and commits; with final nil it opens the next
// transaction.
func (r *receivedCommit) seal(final []write) error {
	s, n, added := r.s, r.n, r.added
	if err := r.t.put(signCounters(s.nextPos+uint64(n), s.signedBytes+added)...); err != nil {
		return err
	}
	r.t.committed = func() {
		s.nextPos += uint64(n)
		s.signedBytes += added
		r.stored += n
	}
	r.n, r.added = 0, 0
	if final == nil {
		return r.t.next()
	}
	for _, w := range final {
		if err := r.t.putOrNext(w); err != nil {
			return err
		}
	}
	return r.t.commit()
}

// SaveChainStates stores states under their keys (a subscriber's
// delivered positions, for example), synced: in one transaction, or in
// several if they do not fit one. Each state stands alone, so a crash
// keeps each one either new or as it was.
func (s *Store) SaveChainStates(ctx context.Context, states map[string]streamr.ChainState) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ws, err := chainWrites(states)
	if err == nil {
		err = s.putSplit(ws)
	}
	if err != nil {
		return fmt.Errorf("save chain states: %w", err)
	}
	return nil
}
