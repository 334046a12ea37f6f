package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// Delivery is a validated message received from the overlay.
// Msg is decoded, its signature and policy checked; Encoded is the wire
// bytes, as signed by the publisher.
type Delivery struct {
	streamr.Envelope
	From string // peer ID of the neighbour that forwarded it
}

// Partition is this node's membership in one stream partition's overlay.
type Partition struct {
	node    *Node
	part    streamr.StreamPartID
	topic   string
	log     *slog.Logger
	v       *validator
	m       *partMetrics
	deliver func(Delivery)
	mesh    peerSet // our GossipSub mesh for the topic, kept by the tracer

	published atomic.Uint64 // messages PublishBatch checked
	publishes atomic.Bool   // this node has published on the partition
	fullCheck atomic.Bool   // a sampled check failed: verify every message
	lastLoss  atomic.Int64  // when gossip of the partition was last shed or dropped at a full queue (UnixNano); 0: never

	tips     *tipStore   // each chain's newest message sent, for re-announcing; nil: off (reannounce.go)
	sendLoss sendLosses  // messages dropped at full queues to peers
	again    reannouncer // checkPeers' goroutine only

	t      *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	cancel context.CancelFunc
	wg     sync.WaitGroup

	leaveOnce sync.Once
	leaveErr  error
}

func topicName(part streamr.StreamPartID) string { return topicPrefix + part.String() }

// Join subscribes to a stream partition's topic, advertises it in the DHT
// and starts forwarding its messages. deliver, if not nil, receives every
// valid message from other nodes, in arrival order, on one goroutine; it
// must return quickly (messages queue in pubsub meanwhile, up to 4,096,
// then are dropped and counted as slow_consumer). Messages this node
// published are not delivered back. A nil deliver makes a relay-only
// member, e.g. a bridge that only publishes on the partition.
func (n *Node) Join(part streamr.StreamPartID, deliver func(Delivery)) (*Partition, error) {
	name := topicName(part)
	p := &Partition{
		node:    n,
		part:    part,
		topic:   name,
		log:     n.log.With("stream_part", part.String()),
		v:       n.validatorFor(part),
		m:       n.metrics.forPart(part.String()),
		deliver: deliver,
	}
	if limit := n.cfg.ReannounceChains; limit > 0 {
		p.tips = newTipStore(limit)
	}
	p.mesh.size = p.m.mesh
	if err := n.reserve(p); err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		return nil, errors.Join(fmt.Errorf("join %s: %w", part, err), p.Leave())
	}
	p.log.Info("joined stream partition", "topic", name)
	n.providers.joined()
	return p, nil
}

// reserve records p as joined, so that a concurrent Join of the same part
// fails and the tracer finds its metrics from the first message on.
func (n *Node) reserve(p *Partition) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return fmt.Errorf("join %s: %w", p.part, net.ErrClosed)
	case n.parts[p.topic] != nil:
		return fmt.Errorf("join %s: %w", p.part, ErrJoined)
	}
	n.parts[p.topic] = p
	n.joined.Store(p.topic, p)
	return nil
}

func (n *Node) forget(p *Partition) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.parts, p.topic)
	n.joined.Delete(p.topic)
	n.metrics.remove(p.m.label)
}

func (p *Partition) start() error {
	ps := p.node.ps
	// Inline validation runs on pubsub's worker pool (one per CPU) instead
	// of a goroutine per message: cheaper on a 2-4 core gateway.
	if err := ps.RegisterTopicValidator(p.topic, p.validate, pubsub.WithValidatorInline(true)); err != nil {
		return fmt.Errorf("register validator: %w", err)
	}
	t, err := ps.Join(p.topic)
	if err != nil {
		return fmt.Errorf("join topic: %w", err)
	}
	p.t = t
	if err := t.SetScoreParams(topicScoreParams()); err != nil {
		return fmt.Errorf("set topic score parameters: %w", err)
	}
	if p.events, err = t.EventHandler(); err != nil {
		return fmt.Errorf("topic events: %w", err)
	}
	if p.sub, err = t.Subscribe(pubsub.WithBufferSize(subscriptionQueue)); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Go(func() { p.readLoop(ctx) })
	p.wg.Go(func() { p.watchPeers(ctx) })
	p.wg.Go(func() { p.checkPeers(ctx) })
	return nil
}

// validate is the pubsub topic validator, run before a gossip message is
// forwarded or delivered. The messages of a bundle accepted ride along as
// ValidatorData (accepted).
func (p *Partition) validate(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if msg.ValidatorData != nil && from == p.node.host.ID() {
		p.noteOwn(msg) // our own Publish checked it already
		return pubsub.ValidationAccept
	}
	if p.shed(from, msg) {
		return pubsub.ValidationIgnore
	}
	acc, result := p.checkBundle(from, msg.Data)
	if result == pubsub.ValidationAccept {
		msg.ValidatorData = acc
	}
	return result
}

// accepted is the ValidatorData of a bundle: those of its messages this
// node accepted and had not accepted lately, in order.
type accepted []streamr.Envelope

// checkBundle validates gossip data from a peer. A bundle that does not
// decode or holds an invalid message is rejected whole and its sender
// penalised. Otherwise it is accepted (and forwarded) if at least one of
// its messages is accepted and was not accepted lately; messages dropped
// without penalty (a timestamp ahead of our clock, a publisher our view of
// the registry refuses) are counted and not delivered here, but travel on
// with the bundle, for peers to judge themselves. A bundle of nothing new
// is ignored.
func (p *Partition) checkBundle(from peer.ID, data []byte) (accepted, pubsub.ValidationResult) {
	if limit := maxBundleSize(p.v.limits); len(data) > limit {
		return nil, p.rejected(from, reasonSize, fmt.Errorf("%w: gossip message of %d bytes exceeds the limit of %d", ErrInvalidMessage, len(data), limit))
	}
	msgs, err := decodeBundle(data)
	if err != nil {
		return nil, p.rejected(from, reasonDecode, fmt.Errorf("%w: %w", ErrInvalidMessage, err))
	}
	acc := make(accepted, 0, len(msgs))
	keys := make([]uint64, 0, len(msgs)) // of acc's messages
	dups := 0
	for _, enc := range msgs {
		m, reason, err := p.v.decode(enc)
		if err != nil {
			return nil, p.rejected(from, reason, err)
		}
		// A repeat, lately or in this bundle, is not verified again: a
		// peer cannot make us verify a message once per copy it packs.
		k := p.node.recent.key(&m.ID)
		if p.node.recent.seen(k) || slices.Contains(keys, k) {
			dups++
			continue
		}
		m, verdict, reason, err := p.v.checkDecoded(m, len(enc))
		switch verdict {
		case reject:
			return nil, p.rejected(from, reason, err)
		case ignore:
			p.ignored(from, reason, err)
			continue
		}
		acc = append(acc, streamr.Envelope{Msg: m, Encoded: enc})
		keys = append(keys, k)
	}
	p.m.dups.Add(float64(dups))
	if len(acc) == 0 {
		return nil, pubsub.ValidationIgnore
	}
	// Only a bundle accepted marks its messages seen: a valid message in a
	// rejected bundle must still be taken from an honest peer.
	now := time.Now().UnixNano()
	for i, e := range acc {
		p.node.recent.add(keys[i])
		p.tips.note(e.Msg, e.Encoded, now)
	}
	return acc, pubsub.ValidationAccept
}

// ignored counts and logs a message dropped without penalty.
func (p *Partition) ignored(from peer.ID, reason string, err error) {
	p.m.drop(reason)
	p.log.Debug("dropped message", "peer", from.String(), "reason", reason, "err", err)
	if reason == reasonPublisher || reason == reasonUnreachable {
		p.node.metrics.refused.logOnce(ruleRegistry, "dropped a message the StreamRegistry does not let its publisher send",
			"stream_part", p.part.String(), "reason", reason, "err", err)
	}
}

// rejected counts and logs invalid gossip: pubsub penalises its sender.
func (p *Partition) rejected(from peer.ID, reason string, err error) pubsub.ValidationResult {
	p.m.drop(reason)
	p.log.Debug("rejected invalid message", "peer", from.String(), "reason", reason, "err", err)
	p.node.metrics.refused.logOnce(ruleInvalidMessage, "rejected invalid gossip: the sender is penalised",
		"peer", from.String(), "stream_part", p.part.String(), "reason", reason)
	return pubsub.ValidationReject
}

// noteOwn records the messages this node publishes as seen and as their
// chains' tips.
func (p *Partition) noteOwn(msg *pubsub.Message) {
	now := time.Now().UnixNano()
	switch vd := msg.ValidatorData.(type) {
	case accepted:
		for _, e := range vd {
			p.node.recent.add(p.node.recent.key(&e.Msg.ID)) // a peer's repacked echo is no news to our subscriber
			p.tips.note(e.Msg, e.Encoded, now)
		}
	case *reannouncement:
		vd.sent = true // pubsub publishes it: not a duplicate of an ID it still holds
		p.tips.note(vd.m, vd.data, now)
	}
}

// Publish validates an encoded, signed StreamMessage of this partition and
// sends it to the overlay. It returns an error wrapping streamr.ErrNoPeers if this
// node has no mesh neighbour in the partition (the message was not sent
// and should stay queued; a newly connected member joins the mesh within a
// heartbeat, 1 s), or ErrInvalidMessage if validation fails.
func (p *Partition) Publish(ctx context.Context, encoded []byte) error {
	_, err := p.PublishBatch(ctx, [][]byte{encoded})
	return err
}

// selfCheckEvery is how often PublishBatch verifies the signature of a
// message this node publishes (besides the first of each partition); the
// others are decoded and checked against the topic only. They come from
// our own signer through our own store, receivers verify every message
// anyway, and a full check costs as much as signing: sampling catches a
// broken key backend or store within a few messages while sparing the
// publisher most of that cost.
const selfCheckEvery = 64

// PublishBatch publishes encoded messages in order, like Publish, in
// bundles of consecutive messages (bundle.go), in one pass through pubsub.
// It returns how many were sent; on streamr.ErrNoPeers none were. An
// invalid message stops the batch before it, and from then on every
// message of the partition is fully verified.
func (p *Partition) PublishBatch(ctx context.Context, encoded [][]byte) (int, error) {
	msgs := make(accepted, 0, len(encoded))
	var firstErr error
	for i, enc := range encoded {
		m, err := p.checkOwn(enc)
		if err == nil && i == 0 {
			p.publishes.Store(true) // even without peers: subscribers will ask us for these
			if p.mesh.len() == 0 {
				return 0, fmt.Errorf("publish %s on %s: %w", m.ID.Ref(), p.part, streamr.ErrNoPeers)
			}
		}
		if err != nil {
			firstErr = fmt.Errorf("publish on %s: %w", p.part, err)
			break
		}
		msgs = append(msgs, streamr.Envelope{Msg: m, Encoded: enc})
	}
	if len(msgs) == 0 {
		return 0, firstErr
	}
	if err := p.publishBundles(ctx, encoded[:len(msgs)], msgs); err != nil {
		return 0, err
	}
	p.m.out.Add(float64(len(msgs)))
	for _, e := range msgs {
		p.m.bytesOut.Add(float64(len(e.Encoded)))
	}
	return len(msgs), firstErr
}

// publishBundles sends checked messages, encoded and decoded, in bundles.
func (p *Partition) publishBundles(ctx context.Context, encoded [][]byte, msgs accepted) error {
	var batch pubsub.MessageBatch
	for _, r := range packBundles(encoded, maxBundleMessages) {
		data, err := encodeBundle(encoded[r[0]:r[1]])
		if err != nil {
			return fmt.Errorf("publish on %s: %w", p.part, err)
		}
		if err := p.t.AddToBatch(ctx, &batch, data, pubsub.WithValidatorData(msgs[r[0]:r[1]])); err != nil {
			return fmt.Errorf("publish on %s: %w", p.part, err)
		}
	}
	if err := p.node.ps.PublishBatch(&batch); err != nil {
		return fmt.Errorf("publish %d messages on %s: %w", len(msgs), p.part, err)
	}
	return nil
}

// checkOwn checks a message this node publishes: fully for every
// selfCheckEvery-th (and after a failure, every one), otherwise size,
// decoding and topic only.
func (p *Partition) checkOwn(enc []byte) (*streamr.StreamMessage, error) {
	if p.fullCheck.Load() || p.published.Add(1)%selfCheckEvery == 1 {
		m, verdict, reason, err := p.v.check(enc)
		if verdict != accept {
			p.m.drop(reason)
			p.fullCheck.Store(true)
			return nil, err
		}
		return m, nil
	}
	m, _, err := p.v.decode(enc)
	if err != nil {
		return nil, err
	}
	if got := m.ID.StreamPart(); got != p.part {
		return nil, fmt.Errorf("%w: message of %s on the topic of %s", ErrInvalidMessage, got, p.part)
	}
	return m, nil
}

// publishesOn reports whether this node joined part and publishes on it:
// its gap fills get the reserved resend slots.
func (n *Node) publishesOn(part streamr.StreamPartID) bool {
	p := n.lookupPartition(topicName(part))
	return p != nil && p.publishes.Load()
}

// Peers returns the number of connected peers in this partition's overlay.
func (p *Partition) Peers() int { return len(p.t.ListPeers()) }

// Neighbours returns the number of mesh peers: those this node sends each
// message to (at most 6, normally 4). Publish needs at least one.
func (p *Partition) Neighbours() int { return p.mesh.len() }

// StreamPart returns the stream partition.
func (p *Partition) StreamPart() streamr.StreamPartID { return p.part }

func (p *Partition) readLoop(ctx context.Context) {
	self := p.node.host.ID()
	var from peer.ID   // the last sender and its string form: few peers send,
	var fromStr string // and a peer.ID's String allocates (base58)
	for {
		msg, err := p.sub.Next(ctx)
		if err != nil {
			return // cancelled by Leave
		}
		acc, ok := msg.ValidatorData.(accepted)
		// pubsub's gossip cache keeps msg for HistoryLength heartbeats to
		// answer IWANTs from its wire form; without this, it would keep
		// the decoded copies alive too, doubling what the cache holds.
		msg.ValidatorData = nil
		if msg.ReceivedFrom == self {
			continue // our own publish: never echoed to local subscribers
		}
		if !ok {
			continue // unreachable: every accepted bundle carries it
		}
		p.m.in.Add(float64(len(acc)))
		for _, e := range acc {
			p.m.bytesIn.Add(float64(len(e.Encoded)))
		}
		if p.deliver == nil {
			continue
		}
		if msg.ReceivedFrom != from {
			from, fromStr = msg.ReceivedFrom, msg.ReceivedFrom.String()
		}
		for _, e := range acc {
			p.deliver(Delivery{Envelope: e, From: fromStr})
		}
	}
}

// watchPeers logs when the overlay forms (first peer) and breaks (last
// peer gone), keeps the mesh set free of peers that left, and tells the
// redialer who the partition's members are.
func (p *Partition) watchPeers(ctx context.Context) {
	for {
		ev, err := p.events.NextPeerEvent(ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerLeave {
			// pubsub drops a gone peer from the mesh without a Prune trace. The
			// event comes late, though: a peer that left and rejoined may be
			// grafted (traced at once) before it arrives, so ask pubsub.
			if !slices.Contains(p.t.ListPeers(), ev.Peer) {
				p.mesh.remove(ev.Peer)
			}
		} else {
			p.node.redial.member(ev.Peer)
		}
		n := p.refreshGauges()
		switch {
		case ev.Type == pubsub.PeerJoin && n == 1:
			p.log.Info("stream partition overlay formed", "peer", ev.Peer.String())
		case ev.Type == pubsub.PeerLeave && n == 0:
			p.log.Warn("stream partition overlay broken: no peers left", "last_peer", ev.Peer.String())
		}
	}
}

// Gauge and mesh checks. pubsub's peer events are coalesced (a leave and
// a join of one peer cancel out), so the gauges are recomputed from
// pubsub's state every gaugeInterval instead of being counted from events.
const (
	gaugeInterval = time.Second
	// resyncAfter is how long a mesh neighbour may be missing from
	// ListPeers. pubsub forgets a peer's subscriptions when a duplicate
	// connection to it closes, while the peer, whose own stream is fine,
	// never sends them again: the connection is then closed and redialled,
	// and both sides exchange their subscriptions afresh.
	resyncAfter = 2 * time.Second
)

// checkPeers keeps the gauges true, resynchronises inconsistent peers
// and re-announces chain tips after send losses.
func (p *Partition) checkPeers(ctx context.Context) {
	t := time.NewTicker(gaugeInterval)
	defer t.Stop()
	unlisted := make(map[peer.ID]time.Time) // mesh peers missing from ListPeers, since
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.refreshGauges()
		p.checkMesh(unlisted)
		p.reannounce(ctx, time.Now())
	}
}

// refreshGauges sets the peers gauge from ListPeers and returns it.
func (p *Partition) refreshGauges() int {
	n := len(p.t.ListPeers())
	p.m.peers.Set(float64(n))
	return n
}

func (p *Partition) checkMesh(unlisted map[peer.ID]time.Time) {
	listed := make(map[peer.ID]bool)
	for _, id := range p.t.ListPeers() {
		listed[id] = true
	}
	now := time.Now()
	inMesh := make(map[peer.ID]bool)
	for _, id := range p.mesh.list() {
		inMesh[id] = true
		switch {
		case p.node.host.Network().Connectedness(id) != network.Connected:
			p.mesh.remove(id)
		case listed[id]:
			delete(unlisted, id)
		case unlisted[id].IsZero():
			unlisted[id] = now
		case now.Sub(unlisted[id]) >= resyncAfter:
			delete(unlisted, id)
			p.node.resync(id, p.log)
		}
	}
	for id := range unlisted {
		if !inMesh[id] {
			delete(unlisted, id)
		}
	}
}

// Leave stops forwarding and delivering the partition's messages and
// unsubscribes. It is idempotent.
func (p *Partition) Leave() error {
	p.leaveOnce.Do(func() {
		var errs []error
		if p.cancel != nil {
			p.cancel()
		}
		if p.sub != nil {
			p.sub.Cancel()
		}
		if p.events != nil {
			p.events.Cancel()
		}
		p.wg.Wait()
		// After Node.Close stopped pubsub, closing the topic and removing
		// the validator fail with context.Canceled: nothing is left to undo.
		if p.t != nil {
			if err := p.t.Close(); !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
		if err := p.node.ps.UnregisterTopicValidator(p.topic); err != nil && p.t != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
		p.node.forget(p)
		if err := errors.Join(errs...); err != nil {
			p.leaveErr = fmt.Errorf("leave %s: %w", p.part, err)
			return
		}
		p.log.Info("left stream partition")
	})
	return p.leaveErr
}

// peerSet is a set of peers safe for concurrent use, its size mirrored
// in a gauge.
type peerSet struct {
	mu    sync.Mutex
	peers map[peer.ID]struct{}
	size  prometheus.Gauge
}

func (s *peerSet) add(id peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers == nil {
		s.peers = make(map[peer.ID]struct{})
	}
	s.peers[id] = struct{}{}
	s.size.Set(float64(len(s.peers)))
}

func (s *peerSet) remove(id peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.peers, id)
	s.size.Set(float64(len(s.peers)))
}

func (s *peerSet) list() []peer.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]peer.ID, 0, len(s.peers))
	for id := range s.peers {
		out = append(out, id)
	}
	return out
}

func (s *peerSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}
