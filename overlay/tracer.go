package overlay

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// tracer turns pubsub events into per-partition metrics. It counts only
// topics this node joined (pubsub ignores the others), so a peer cannot
// create metric series at will. Validation failures are counted by the
// validator, with finer reasons.
type tracer struct {
	lookup func(topic string) *Partition // nil result: not joined
	closed func(peer.ID)                 // our stream to a peer closed: pubsub dropped it from every mesh
	queue  *queueClock                   // stamps arriving gossip; nil: no shedding
}

var _ pubsub.RawTracer = (*tracer)(nil)

func (t *tracer) count(topic string, f func(*partMetrics)) {
	if p := t.lookup(topic); p != nil {
		f(p.m)
	}
}

// Graft and Prune track our mesh for the topic: the neighbours a publish
// actually goes to.
func (t *tracer) Graft(id peer.ID, topic string) {
	if p := t.lookup(topic); p != nil {
		p.mesh.add(id)
	}
}

func (t *tracer) Prune(id peer.ID, topic string) {
	if p := t.lookup(topic); p != nil {
		p.mesh.remove(id)
	}
}

// OnClosedOutboundStream: pubsub removes the peer from every mesh without
// a Prune trace.
func (t *tracer) OnClosedOutboundStream(id peer.ID) { t.closed(id) }

func (t *tracer) DuplicateMessage(msg *pubsub.Message) {
	t.forget(msg)
	if _, ok := msg.ValidatorData.(*reannouncement); ok {
		return // our re-announce of an ID pubsub still holds: tried again later, not a copy received
	}
	t.count(msg.GetTopic(), func(pm *partMetrics) { pm.dups.Add(float64(bundleCount(msg.GetData()))) })
}

// RejectMessage counts pubsub's drops before validation. Those at a full
// validation queue are losses this node knows of: the gaps they leave are
// asked for at once (Partition.noteLoss).
func (t *tracer) RejectMessage(msg *pubsub.Message, reason string) {
	t.forget(msg) // dropped before the validator took its stamp, or after (no-op)
	var r string
	switch reason {
	case pubsub.RejectValidationQueueFull:
		r = reasonQueueFull
	case pubsub.RejectValidationThrottled:
		r = reasonThrottled
	default: // validator verdicts are counted by the validator; others cannot occur with our settings
		return
	}
	t.lost(msg, r)
}

// UndeliverableMessage: validated, but the queue to our subscriber was
// full; forwarded, yet lost to this node.
func (t *tracer) UndeliverableMessage(msg *pubsub.Message) { t.lost(msg, reasonSlowConsumer) }

func (t *tracer) lost(msg *pubsub.Message, reason string) {
	if p := t.lookup(msg.GetTopic()); p != nil {
		p.m.dropN(reason, bundleCount(msg.GetData()))
		p.noteLoss()
	}
}

// DropRPC: pubsub dropped an RPC to a peer (its queue was full). Its
// messages are lost to that peer, which learns of a gap only from a later
// message of the chain: the partition re-announces its chains' tips once
// the losses end (reannounce.go).
func (t *tracer) DropRPC(rpc *pubsub.RPC, _ peer.ID) {
	msgs := rpc.GetPublish()
	if len(msgs) == 0 {
		return
	}
	now := time.Now().UnixNano()
	for _, m := range msgs {
		if p := t.lookup(m.GetTopic()); p != nil {
			p.m.dropN(reasonSendQueue, bundleCount(m.GetData()))
			p.sendLoss.note(now)
		}
	}
}

func (t *tracer) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (t *tracer) Join(string)                              {}
func (t *tracer) Leave(string)                             {}
func (t *tracer) ValidateMessage(*pubsub.Message)          {}
func (t *tracer) DeliverMessage(*pubsub.Message)           {}
func (t *tracer) ThrottlePeer(peer.ID)                     {}

// RecvRPC stamps the RPC's gossiped messages of joined topics with their
// arrival: pubsub queues them for validation next (see queueClock).
func (t *tracer) RecvRPC(rpc *pubsub.RPC) {
	if t.queue != nil {
		t.queue.arrived(rpc, t.lookup)
	}
}

func (t *tracer) forget(msg *pubsub.Message) {
	if t.queue != nil && msg.Message != nil {
		t.queue.forget(msg.Message)
	}
}
func (t *tracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (t *tracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
