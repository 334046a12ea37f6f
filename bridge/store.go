package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// ReceivedLog keeps messages of other publishers, with the positions up
// to which each chain is stored; storage.Store satisfies it.
type ReceivedLog interface {
	StoreReceived(ctx context.Context, msgs []streamr.Envelope, chains map[string]streamr.ChainState) (int, error)
	ChainState(key string) (streamr.ChainState, bool, error)
}

// Storer is the storage node role ([[store]] rules): it keeps every
// message of the configured stream partitions, complete and in chain
// order (through an Orderer that fills gaps), so this node can answer
// resend requests for them.
//
// The Storer is also its Orderer's PositionStore: a chain's stored
// position is written in the same transaction as the messages up to it,
// so after a crash the position never claims a message that is missing.
type Storer struct {
	log    ReceivedLog
	order  *Orderer
	keepFn Deliver // s.keep, made once: a method value per message allocates
	logger *slog.Logger
	joined chan struct{} // closed once Run has joined every stream partition

	mu     sync.Mutex
	buf    []streamr.Envelope
	states map[string]streamr.ChainState // positions covering buf
}

// storeFlushInterval bounds how long a received message waits in memory
// before its batch is written.
const storeFlushInterval = 50 * time.Millisecond

// NewStorer returns a Storer writing to log. Its Orderer (which Run runs)
// is built from cfg with the Storer as Positions, named
// streamr.StoredPositions whatever cfg.Name: storage.Store.Receipts reads
// what this node acknowledges from those positions.
func NewStorer(log ReceivedLog, cfg OrderConfig, logger *slog.Logger) *Storer {
	s := &Storer{log: log, logger: componentLogger(logger, "storer"), joined: make(chan struct{}), states: make(map[string]streamr.ChainState)}
	cfg.Positions, cfg.Name = s, streamr.StoredPositions
	s.order = NewOrderer(cfg)
	s.keepFn = s.keep
	return s
}

// Joined is closed once Run has joined the overlay of every stream
// partition it stores.
func (s *Storer) Joined() <-chan struct{} { return s.joined }

// ChainState implements PositionStore from what is stored, or about to be.
func (s *Storer) ChainState(key string) (streamr.ChainState, bool, error) {
	s.mu.Lock()
	st, ok := s.states[key] // not written yet: newer than the stored one
	s.mu.Unlock()
	if ok {
		return st, true, nil
	}
	return s.log.ChainState(key)
}

// SaveChainStates implements PositionStore: the positions are written
// with the next batch of messages.
func (s *Storer) SaveChainStates(_ context.Context, states map[string]streamr.ChainState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range states {
		s.states[k] = v
	}
	return nil
}

// join joins the overlay of each stream partition to store.
func (s *Storer) join(overlay Overlay, parts []streamr.StreamPartID) error {
	for _, part := range parts {
		if _, err := overlay.Join(part, s.receive); err != nil {
			return fmt.Errorf("store %s: %w", part, err)
		}
		s.logger.Info("storing stream partition", "stream_part", part.String())
	}
	return nil
}

func (s *Storer) receive(m *streamr.StreamMessage, encoded []byte) {
	if err := s.order.Add(m, encoded, s.keepFn); err != nil {
		s.logger.Warn("order message to store", "stream_part", m.ID.StreamPart().String(), "err", err)
	}
}

// keep buffers a message the Orderer delivered, for the next flush.
func (s *Storer) keep(m *streamr.StreamMessage, encoded []byte) {
	s.mu.Lock()
	s.buf = append(s.buf, streamr.Envelope{Msg: m, Encoded: encoded})
	s.mu.Unlock()
}

// Run joins the overlay of each of parts, then orders what arrives
// (filling gaps) and writes it in batches until ctx is done.
func (s *Storer) Run(ctx context.Context, overlay Overlay, parts []streamr.StreamPartID) error {
	orderCtx, stopOrder := context.WithCancel(ctx)
	defer stopOrder()
	ordered := make(chan error, 1)
	go func() { ordered <- s.order.Run(orderCtx) }()
	if err := s.join(overlay, parts); err != nil {
		stopOrder()
		return errors.Join(err, <-ordered)
	}
	close(s.joined)
	t := time.NewTicker(storeFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The Orderer delivers the messages it held on its way out.
			return errors.Join(<-ordered, s.flush(context.WithoutCancel(ctx)))
		case <-t.C:
		}
		if err := s.flush(ctx); err != nil {
			s.logger.Error("store received messages", "err", err)
		}
	}
}

// flush writes the buffered messages and, with the last part of them, the
// positions that cover them.
func (s *Storer) flush(ctx context.Context) error {
	s.mu.Lock()
	batch, states := s.buf, s.states
	s.buf, s.states = nil, make(map[string]streamr.ChainState)
	s.mu.Unlock()
	for {
		n := min(len(batch), 256) // one Badger transaction stays small
		var st map[string]streamr.ChainState
		if n == len(batch) {
			st = states
		}
		if _, err := s.log.StoreReceived(ctx, batch[:n], st); err != nil {
			s.requeue(batch, states)
			return err
		}
		if batch = batch[n:]; len(batch) == 0 {
			return nil
		}
	}
}

// requeue puts an unwritten batch back in front of what arrived since.
func (s *Storer) requeue(batch []streamr.Envelope, states map[string]streamr.ChainState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(batch, s.buf...)
	for k, v := range s.states {
		states[k] = v // newer positions win
	}
	s.states = states
}
