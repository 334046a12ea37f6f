package overlay

import (
	"context"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tributary-iot/tributary/streamr"
)

// resendAdmission shares the resend answer slots: one peer holds at most
// perPeer of them (a peer reading an answer at 16 KiB/s held all eight
// global slots), and reserved of them serve only gap fills of partitions
// this node publishes on, which are what its subscribers need to recover
// its own readings. Other requests share the rest.
type resendAdmission struct {
	total, perPeer, reserved int
	own                      func(streamr.StreamPartID) bool

	mu      sync.Mutex
	inUse   int // answers in progress
	general int // of which not reserved-eligible
	byPeer  map[peer.ID]int
}

func newResendAdmission(cfg ResendConfig, own func(streamr.StreamPartID) bool) *resendAdmission {
	return &resendAdmission{total: cfg.MaxStreams, perPeer: cfg.MaxStreamsPerPeer, reserved: cfg.ReservedStreams, own: own, byPeer: make(map[peer.ID]int)}
}

// admit takes a slot for p's query q. It returns a release function, or
// the rule that refused the query.
func (a *resendAdmission) admit(p peer.ID, q *streamr.ResendQuery) (release func(), rule string) {
	priority := isGapFill(q) && a.own(q.Part)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.byPeer[p] >= a.perPeer:
		return nil, ruleResendPerPeer
	case a.inUse >= a.total, !priority && a.general >= a.total-a.reserved:
		return nil, ruleResendBusy
	}
	a.inUse++
	a.byPeer[p]++
	if !priority {
		a.general++
	}
	return func() { a.release(p, priority) }, ""
}

func (a *resendAdmission) release(p peer.ID, priority bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inUse--
	if !priority {
		a.general--
	}
	if a.byPeer[p]--; a.byPeer[p] == 0 {
		delete(a.byPeer, p)
	}
}

// isGapFill reports whether q asks for a range of one publisher's chain,
// the shape of the bridge Orderer's gap fill.
func isGapFill(q *streamr.ResendQuery) bool {
	return q.Last == 0 && len(q.Publisher) > 0 && q.ChainID != ""
}

// askSlots is the client side of resendAdmission: this node keeps at most
// perPeer resend requests open to one peer, its own MaxStreamsPerPeer,
// which is what a peer on the same defaults admits from it. Beyond that
// a request waits here for an answer to end instead of being refused
// TOO_BUSY by the peer: a gateway's two orderers (delivery and storing)
// keep up to 8 gap fills in flight, against 4 admitted per peer, and a
// refused fill waited resend_retry, stalling its chains for seconds at
// high load.
type askSlots struct {
	perPeer int

	mu    sync.Mutex
	peers map[peer.ID]*peerSlots
}

// peerSlots is a semaphore of one peer's requests; users counts holders
// and waiters, so that an idle peer's entry is dropped.
type peerSlots struct {
	sem   chan struct{}
	users int
}

func newAskSlots(perPeer int) *askSlots {
	return &askSlots{perPeer: perPeer, peers: make(map[peer.ID]*peerSlots)}
}

// take waits for a slot to ask p, until ctx ends; release gives it back.
func (a *askSlots) take(ctx context.Context, p peer.ID) (release func(), err error) {
	a.mu.Lock()
	s := a.peers[p]
	if s == nil {
		s = &peerSlots{sem: make(chan struct{}, a.perPeer)}
		a.peers[p] = s
	}
	s.users++
	a.mu.Unlock()
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem; a.leave(p, s) }, nil
	case <-ctx.Done():
		a.leave(p, s)
		return nil, fmt.Errorf("waiting for a request slot: %w", ctx.Err())
	}
}

func (a *askSlots) leave(p peer.ID, s *peerSlots) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.users--; s.users == 0 {
		delete(a.peers, p)
	}
}
