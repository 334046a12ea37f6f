package storage

import (
	"fmt"

	"github.com/tributary-iot/tributary/streamr"
)

// signedCommit writes a CommitSigned batch through a txnSplit. Every
// transaction holds whole messages: each message's log entry, index key
// and the deletion of its reading, and the states of the chains of its
// messages as of its last one (the caller's states in the last
// transaction). So a crash between two transactions leaves stored chain
// states that match the stored messages, and the readings not yet stored
// signed still pending: the signer re-signs them continuing each chain
// from its stored state (no reference to a message that is not stored, no
// reading signed twice), which is what a crash before the whole batch
// would have left.
type signedCommit struct {
	s     *Store
	t     *txnSplit
	final map[string]streamr.ChainState // the caller's states, for the last transaction
	keyOf map[string]string             // chain ID → its key in final

	// Of the open transaction: the states of its messages' chains, the
	// room they and the counters will take, how many messages it holds
	// and their encoded bytes.
	states   map[string]streamr.ChainState
	reserved txnCost
	n        int
	added    int64
}

// chainStateSlack is room reserved beyond a chain state's encoded size for
// the same chain's later references in the transaction (longer numbers).
const chainStateSlack = 24

func (s *Store) newSignedCommit(final map[string]streamr.ChainState) *signedCommit {
	c := &signedCommit{s: s, t: s.newSplit(), final: final, keyOf: make(map[string]string, len(final))}
	for k, st := range final {
		c.keyOf[st.ID] = k
	}
	c.reset()
	return c
}

// reset starts the bookkeeping of a new transaction.
func (c *signedCommit) reset() {
	c.states = make(map[string]streamr.ChainState)
	c.reserved = c.t.cost(signCounters(0, 0)...)
	c.n, c.added = 0, 0
}

// add writes sm to the open transaction, committing that first if sm
// does not fit with what it holds.
func (c *signedCommit) add(sm *Signed) error {
	s := c.s
	if err := checkPending(c.t.txn, sm.ReadingSeq); err != nil {
		return err
	}
	id := &sm.Msg.ID
	part, err := s.partNumber(id.StreamPart())
	if err != nil {
		return err
	}
	enc := sm.Encoded
	if enc == nil {
		if enc, err = sm.Msg.Marshal(); err != nil {
			return fmt.Errorf("encode message of reading %d: %w", sm.ReadingSeq, err)
		}
	}
	// The position is the same in this transaction or the next: sealing
	// this one advances nextPos by the messages it holds.
	mw := messageWrites(s.nextPos+uint64(c.n), part, sm.ReadingSeq, id, enc)
	ws := append(mw[:], write{key: readingKey(sm.ReadingSeq), del: true})
	key, state, chainCost, err := c.chainOf(id)
	if err != nil {
		return err
	}
	if !c.t.fits(c.t.cost(ws...).plus(chainCost).plus(c.reserved)) && c.n > 0 {
		if err := c.seal(); err != nil {
			return err
		}
		if key, state, chainCost, err = c.chainOf(id); err != nil { // the chain is new to this transaction
			return err
		}
	}
	if !c.t.fits(c.t.cost(ws...).plus(chainCost).plus(c.reserved)) {
		return fmt.Errorf("message %s of reading %d: %d bytes: too big for one transaction", id.Ref(), sm.ReadingSeq, len(enc))
	}
	if err := c.t.put(ws...); err != nil {
		return fmt.Errorf("store message %s of reading %d: %w", id.Ref(), sm.ReadingSeq, err)
	}
	if key != "" {
		c.states[key] = state
		c.reserved = c.reserved.plus(chainCost)
	}
	c.n++
	c.added += int64(len(enc))
	return nil
}

// chainOf returns the key of the caller's chain a message belongs to ("":
// none), the chain's state as of the message, and the room to reserve for
// that state if the open transaction has none of its messages yet.
func (c *signedCommit) chainOf(id *streamr.MessageID) (string, streamr.ChainState, txnCost, error) {
	key, ok := c.keyOf[id.MsgChainID]
	if !ok {
		return "", streamr.ChainState{}, txnCost{}, nil
	}
	ref := streamr.MessageRef{Timestamp: id.Timestamp, SequenceNumber: id.SequenceNumber}
	st := streamr.ChainState{ID: id.MsgChainID, Last: &ref}
	if _, held := c.states[key]; held {
		return key, st, txnCost{}, nil
	}
	w, err := chainWrite(key, st)
	if err != nil {
		return "", st, txnCost{}, err
	}
	cost := c.t.cost(w)
	cost.size += chainStateSlack
	return key, st, cost, nil
}

// seal writes the open transaction's chain states and counters, commits
// it and opens the next; the store's counters advance once it is durable.
func (c *signedCommit) seal() error {
	s := c.s
	ws, err := chainWrites(c.states)
	if err != nil {
		return err
	}
	ws = append(ws, signCounters(s.nextPos+uint64(c.n), s.signedBytes+c.added)...)
	if err := c.t.put(ws...); err != nil {
		return err
	}
	states, n, added := c.states, c.n, c.added
	c.t.committed = func() {
		s.nextPos += uint64(n)
		s.signedBytes += added
		s.chainsStored(states)
		s.pending.Add(-int64(n))
	}
	if err := c.t.next(); err != nil {
		return err
	}
	c.reset()
	return nil
}

// finish commits the last transaction with the caller's chain states: of
// the chains in it, and then of any other chain (all of whose messages
// are stored by then), in further transactions if they do not fit.
func (c *signedCommit) finish() error {
	rest := make(map[string]streamr.ChainState)
	for k, st := range c.final {
		if _, held := c.states[k]; held {
			c.states[k] = st
		} else {
			rest[k] = st
		}
	}
	if err := c.seal(); err != nil {
		return err
	}
	if len(rest) == 0 {
		return nil
	}
	ws, err := chainWrites(rest)
	if err != nil {
		return err
	}
	if err := c.s.putSplit(ws); err != nil {
		return err
	}
	c.s.chainsStored(rest)
	return nil
}
