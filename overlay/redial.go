package overlay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Redial timing. A peer that restarts is usually back within a second or
// two, so the first redial comes quickly and the delay doubles up to
// RedialInterval.
const (
	firstRedial = 200 * time.Millisecond
	// knownPeerRedial is the first delay for a partition member that is
	// not a bootstrap peer: longer than firstRedial, because a restarted
	// node dials its own bootstrap peers at once, and two simultaneous
	// dials leave duplicate connections that GossipSub handles badly.
	knownPeerRedial = time.Second
	// knownPeerTTL is how long a lost partition member is redialled. A
	// member gone longer than that is left to discovery.
	knownPeerTTL = 2 * time.Minute
)

// redialer reconnects to lost peers: bootstrap peers forever, members of
// a joined partition for knownPeerTTL, each with its own exponential
// backoff. It learns of losses from the network's notifications, so a
// restarted peer is found again in about a second instead of at the next
// RedialInterval tick.
type redialer struct {
	n         *Node
	bootstrap map[peer.ID]bool
	members   bool // redial lost partition members too
	wake      chan struct{}

	mu    sync.Mutex
	known map[peer.ID]time.Time // partition members, last seen in a partition
	lost  map[peer.ID]*backoff  // peers to redial
}

type backoff struct {
	next   time.Time
	delay  time.Duration
	since  time.Time // when the peer was lost
	warned bool      // a failed attempt was logged at warning level
}

func newRedialer(n *Node, members bool) *redialer {
	r := &redialer{
		n:         n,
		members:   members,
		bootstrap: make(map[peer.ID]bool, len(n.bootstrap)),
		wake:      make(chan struct{}, 1),
		known:     make(map[peer.ID]time.Time),
		lost:      make(map[peer.ID]*backoff),
	}
	for _, b := range n.bootstrap {
		if b.ID != n.host.ID() {
			r.bootstrap[b.ID] = true
			r.lost[b.ID] = &backoff{delay: firstRedial, since: time.Now()}
		}
	}
	return r
}

// member records that id is a member of one of our partitions.
func (r *redialer) member(id peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known[id] = time.Now()
}

func (r *redialer) isMember(id peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.known[id]
	return ok
}

// disconnected schedules a redial of id if we want it back.
func (r *redialer) disconnected(id peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, isKnown := r.known[id]
	if !r.bootstrap[id] && (!isKnown || !r.members) {
		return
	}
	if _, ok := r.lost[id]; ok {
		return
	}
	first := knownPeerRedial
	if r.bootstrap[id] {
		first = firstRedial
	}
	now := time.Now()
	r.lost[id] = &backoff{next: now.Add(first), delay: first, since: now}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run redials due peers until ctx ends. It also retries every bootstrap
// peer at least every RedialInterval.
func (r *redialer) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
		r.dialDue(ctx)
		t.Reset(r.untilNext())
	}
}

// untilNext is how long until the next redial is due.
func (r *redialer) untilNext() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	wait := r.n.cfg.RedialInterval
	for _, b := range r.lost {
		wait = min(wait, max(time.Until(b.next), 0))
	}
	return wait
}

// dialDue dials, in parallel, the lost peers whose backoff expired and
// waits for the attempts.
func (r *redialer) dialDue(ctx context.Context) {
	var wg sync.WaitGroup
	for _, id := range r.due() {
		wg.Go(func() { r.dial(ctx, id) })
	}
	wg.Wait()
}

func (r *redialer) due() []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	// A bootstrap peer we are not connected to is redialled even if no
	// disconnection was noticed: Disconnected sees the peer still
	// connected while a second connection to it is closing too.
	for id := range r.bootstrap {
		if _, ok := r.lost[id]; !ok && r.n.host.Network().Connectedness(id) != network.Connected {
			r.lost[id] = &backoff{next: now, delay: firstRedial, since: now}
		}
	}
	var out []peer.ID
	for id, b := range r.lost {
		switch {
		case r.n.host.Network().Connectedness(id) == network.Connected:
			delete(r.lost, id)
		case !r.bootstrap[id] && now.Sub(b.since) > knownPeerTTL:
			delete(r.lost, id)
			delete(r.known, id)
		case !now.Before(b.next):
			b.next = now.Add(b.delay)
			b.delay = min(2*b.delay, r.n.cfg.RedialInterval)
			out = append(out, id)
		}
	}
	return out
}

func (r *redialer) dial(ctx context.Context, id peer.ID) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	// Our own backoff paces the attempts; the swarm's (5 s and more after
	// a failed dial) would keep a restarted peer away for longer.
	dctx = network.WithForceDirectDial(dctx, "redial lost peer")
	info := peer.AddrInfo{ID: id, Addrs: r.n.host.Peerstore().Addrs(id)}
	if err := r.n.host.Connect(dctx, info); err != nil {
		if ctx.Err() == nil {
			r.logFailure(id, err)
		}
		return
	}
	r.n.metrics.redials.Inc()
	r.mu.Lock()
	delete(r.lost, id)
	r.mu.Unlock()
	r.n.log.Info("reconnected to peer", "peer", id.String())
}

// logFailure warns once per outage about an unreachable bootstrap peer;
// later attempts, and lost partition members, which are expected to be
// away for a while, log at debug level.
func (r *redialer) logFailure(id peer.ID, err error) {
	r.mu.Lock()
	b := r.lost[id]
	first := b != nil && !b.warned
	if first {
		b.warned = true
	}
	r.mu.Unlock()
	if r.bootstrap[id] && first {
		r.n.log.Warn("bootstrap peer unreachable; retrying with backoff", "peer", id.String(), "err", err)
		return
	}
	r.n.log.Debug("lost peer unreachable", "peer", id.String(), "err", err)
}

// notifiee forwards disconnections to the redialer.
type notifiee struct{ r *redialer }

var _ network.Notifiee = notifiee{}

func (nf notifiee) Disconnected(nw network.Network, c network.Conn) {
	id := c.RemotePeer()
	if nw.Connectedness(id) != network.Connected { // the last connection to id is gone
		nf.r.disconnected(id)
	}
}

func (notifiee) Listen(network.Network, ma.Multiaddr)      {}
func (notifiee) ListenClose(network.Network, ma.Multiaddr) {}
func (notifiee) Connected(network.Network, network.Conn)   {}

// resync closes every connection to id, whose pubsub state went out of
// step with ours, and has the redialer bring it back.
func (n *Node) resync(id peer.ID, log *slog.Logger) {
	n.redial.member(id)
	n.metrics.resyncs.Inc()
	log.Info("mesh peer not listed as subscribed: reconnecting to exchange subscriptions again", "peer", id.String())
	if err := n.host.Network().ClosePeer(id); err != nil {
		log.Warn("close connections for resync", "peer", id.String(), "err", err)
	}
}
