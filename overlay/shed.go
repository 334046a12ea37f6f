package overlay

import (
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tributary-iot/tributary/streamr"
)

// SuggestedShedQueueWait is how long a gossiped message may wait in
// pubsub's validation queue before it is shed instead of validated, when
// shedding is on (Config.ShedQueueWait; off by default, see the package
// doc).
// At the 4,096-message queue a Raspberry Pi validating ~5,000 msg/s
// overflows after ~0.8 s; shedding at a quarter of that keeps the queue
// from ever filling and bounds what an accepted message waits.
const SuggestedShedQueueWait = 200 * time.Millisecond

// SuggestedShedQueueDepth is how many gossiped messages may wait for
// validation before the one taken next is shed (Config.ShedQueueDepth):
// a quarter of pubsub's validation queue, as SuggestedShedQueueWait is
// of the time it takes to fill on a Raspberry Pi.
const SuggestedShedQueueDepth = validateQueue / 4

// queueClock stamps gossiped messages of joined topics when their RPC
// arrives (the tracer's RecvRPC, on pubsub's event loop, just before the
// messages are queued for validation), so that the validator knows how
// long each one waited for a validation worker. The stamps are keyed by
// the protobuf message, which pubsub hands on unchanged from the RPC to
// the validator.
type queueClock struct {
	mu     sync.Mutex
	stamps map[*pb.Message]time.Time
	now    func() time.Time
}

// maxStamps bounds the stamps kept: a message pubsub drops before the
// validator (traced or not) leaves its stamp behind; when the map is this
// full it is cleared, and the messages then in the queue count as not
// having waited (validated, never shed wrongly).
const maxStamps = 2 * validateQueue

func newQueueClock(now func() time.Time) *queueClock {
	return &queueClock{stamps: make(map[*pb.Message]time.Time), now: now}
}

// arrived stamps the published messages of rpc of the topics this node
// joined (lookup finds their Partition).
func (q *queueClock) arrived(rpc *pubsub.RPC, lookup func(topic string) *Partition) {
	msgs := rpc.GetPublish()
	if len(msgs) == 0 {
		return
	}
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range msgs {
		if lookup(m.GetTopic()) == nil {
			continue
		}
		if len(q.stamps) >= maxStamps {
			clear(q.stamps)
		}
		q.stamps[m] = now
	}
}

// waited removes m's stamp and returns how long ago it arrived, and how
// many stamped messages (m included) were waiting for validation; zero
// wait if it carries none (published locally, or its stamp was cleared).
func (q *queueClock) waited(m *pb.Message) (time.Duration, int) {
	q.mu.Lock()
	at, ok := q.stamps[m]
	depth := len(q.stamps)
	delete(q.stamps, m)
	q.mu.Unlock()
	if !ok {
		return 0, depth
	}
	return q.now().Sub(at), depth
}

// forget drops m's stamp: pubsub dropped it before validation.
func (q *queueClock) forget(m *pb.Message) {
	q.mu.Lock()
	delete(q.stamps, m)
	q.mu.Unlock()
}

// shed reports whether msg, gossip from a peer, waited in the validation
// queue longer than ShedQueueWait and is dropped unvalidated. It is not
// forwarded either (ValidationIgnore, without penalty: the delay is ours);
// its ID is marked seen, so copies by other paths are dropped as
// duplicates, and the receiver's Orderer fetches it by resend once a later
// message of its chain shows the gap.
func (p *Partition) shed(from peer.ID, msg *pubsub.Message) bool {
	q := p.node.queue
	if q == nil || msg.Message == nil {
		return false
	}
	wait, depth := q.waited(msg.Message)
	cfg := &p.node.cfg
	byWait := cfg.ShedQueueWait > 0 && wait > cfg.ShedQueueWait
	byDepth := cfg.ShedQueueDepth > 0 && depth > cfg.ShedQueueDepth && wait > 0
	if !byWait && !byDepth {
		return false
	}
	p.m.dropN(reasonShed, bundleCount(msg.GetData()))
	p.noteLoss()
	p.node.metrics.refused.logOnce(ruleShed, "shedding gossip: messages wait for validation longer than shed_queue_wait or behind more than shed_queue_depth; gap fill pulls them by resend",
		"stream_part", p.part.String(), "peer", from.String(), "waited", wait.String(), "queued", depth,
		"shed_queue_wait", cfg.ShedQueueWait.String(), "shed_queue_depth", cfg.ShedQueueDepth)
	return true
}

// noteLoss records that gossip of p was lost here, unvalidated: shed, or
// dropped by pubsub at a full queue. The gap it leaves is fetched at once.
func (p *Partition) noteLoss() { p.lastLoss.Store(time.Now().UnixNano()) }

// LastLoss returns when this node last lost gossip of part that it knows
// of (zero: never, or part not joined): shed, or dropped by pubsub at its
// full validation queue or at the full queue to our subscriber. A gap that
// opens after such a loss is that loss, to fetch at once, not a reordering
// to wait out (bridge.OrderConfig.LastLoss).
func (n *Node) LastLoss(part streamr.StreamPartID) time.Time {
	p := n.lookupPartition(topicName(part))
	if p == nil {
		return time.Time{}
	}
	if at := p.lastLoss.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Time{}
}
