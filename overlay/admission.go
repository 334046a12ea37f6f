package overlay

import (
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
