package broker

import (
	"context"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ackQueue completes one client's QoS 1 PUBLISHes in the order they arrived: for each it waits
// until the message is durable, then writes its PUBACK and delivers it to subscribers. The
// client's read goroutine (mochi's, running the hook) keeps reading meanwhile, so readings of
// one client share a storage commit instead of waiting for one each.
//
// mochi internals relied on (v2.7.9):
//   - OnPublish returning packets.ErrRejectPacket makes processPublish return before retaining,
//     delivering, acking or touching the receive quota (server.go:916-917; the quota is taken
//     and given back only on the ack path, server.go:941 and 961), so bypassing mochi's QoS 1
//     path leaks no quota and never trips ErrReceiveMaximum (server.go:863). The queue's own
//     bound (slots) takes the quota's place for QoS 1.
//   - Server.InjectPacket with an inline client runs processPublish without topic-validity, ACL
//     or inflight checks (server.go:859, 867, 893) and with an unlimited receive quota
//     (NewClient, server.go:257), passes the packet through OnPublish (the hook lets inline
//     clients through, so the Handler is not called again), retains it and publishes it to
//     subscribers (server.go:929, 935-937). processPublish stamps pk.Origin with the inline
//     client's ID (server.go:885); inline has cl's ID, so NoLocal subscriptions of cl still skip
//     its own messages (server.go:1025).
//   - Client.WritePacket is safe for concurrent use with mochi's goroutines (the write happens
//     under cl.Lock, clients.go:603) and fails with ErrConnectionClosed once the client is
//     stopped (clients.go:527).
//   - PUBLISH payloads are freshly allocated per packet (clients.go:470,479), so a queued
//     packet is not overwritten by the next read.
type ackQueue struct {
	h      *hook
	cl     *mqtt.Client
	inline *mqtt.Client // delivers on cl's behalf (same ID, so pk.Origin stays cl's); set by run

	ctx    context.Context // cancelled on disconnect, shutdown, or a failed Wait
	cancel context.CancelFunc
	slots  chan struct{} // one token per QoS 1 PUBLISH being decided or queued; cap = receive maximum
	queue  chan *queued  // served by run in order; never full, as slots bounds it

	started bool // run was started; accessed by the read goroutine only
}

// queued is one QoS 1 PUBLISH awaiting its turn.
type queued struct {
	pk        packets.Packet
	code      ReasonCode                  // Success: ack and deliver; else ack with this code
	wait      func(context.Context) error // for Success: nil if already durable
	closeConn bool                        // close the connection instead of acking
}

// newQueued returns an entry for pk, recycled if one is free.
func (h *hook) newQueued(pk packets.Packet, code ReasonCode, wait func(context.Context) error) *queued {
	e, _ := h.entries.Get().(*queued)
	if e == nil {
		e = new(queued)
	}
	*e = queued{pk: pk, code: code, wait: wait}
	return e
}

// recycle returns a completed entry for reuse, without its packet.
func (h *hook) recycle(e *queued) {
	*e = queued{}
	h.entries.Put(e)
}

func newAckQueue(h *hook, cl *mqtt.Client) *ackQueue {
	ctx, cancel := context.WithCancel(h.ctx)
	return &ackQueue{
		h:      h,
		cl:     cl,
		ctx:    ctx,
		cancel: cancel,
		slots:  make(chan struct{}, h.receiveMaximum),
		queue:  make(chan *queued, h.receiveMaximum),
	}
}

// acquire takes a slot for one QoS 1 PUBLISH, blocking while the client has receive-maximum
// messages outstanding (backpressure: the client's socket is not read meanwhile). It returns
// false once the queue has stopped; the connection is then being closed.
func (q *ackQueue) acquire() bool {
	if q.ctx.Err() != nil {
		return false
	}
	select {
	case q.slots <- struct{}{}:
		return true
	case <-q.ctx.Done(): // also when run has returned
		return false
	}
}

// release gives back a slot taken by acquire that was not handed to push.
func (q *ackQueue) release() { <-q.slots }

// behind reports whether earlier messages still await their PUBACK. The caller holds a slot, so
// false means every earlier PUBACK has been written.
func (q *ackQueue) behind() bool { return len(q.slots) > 1 }

// push queues e, handing its slot to the queue. Only the read goroutine calls it.
func (q *ackQueue) push(e *queued) {
	if !q.started {
		q.started = true
		q.h.workers.Add(1)
		go q.run()
	}
	q.queue <- e
}

// stop cancels the outstanding Wait and makes run return without acking anything more.
func (q *ackQueue) stop() { q.cancel() }

func (q *ackQueue) run() {
	defer q.h.workers.Done()
	defer q.cancel() // unblocks acquire
	// Created here, not in newAckQueue: mochi allocates an outbound queue for every client, and
	// clients whose messages are all durable at once never need it.
	q.inline = q.h.srv.NewClient(nil, mqtt.LocalListener, q.cl.ID, true)
	// InjectPacket stamps the packet with the inline client's protocol version, and mochi
	// expires queued and retained messages only of version 5 (clients.go:345, server.go:1719);
	// as cl's stand-in it must speak cl's version, or MQTT 5 message expiry is ignored.
	q.inline.Properties.ProtocolVersion = q.cl.Properties.ProtocolVersion
	for {
		select {
		case <-q.ctx.Done():
			return
		case e := <-q.queue:
			if !q.complete(e) {
				return
			}
			q.h.recycle(e)
			q.release()
		}
	}
}

// complete waits for e, delivers and acknowledges it. It returns false if the queue must stop:
// the client is gone, the broker is shutting down, or the connection was closed on purpose.
func (q *ackQueue) complete(e *queued) bool {
	if e.wait != nil && !q.cl.Closed() {
		if err := e.wait(q.ctx); err != nil {
			if q.ctx.Err() == nil {
				q.h.waitFailed(q.cl, e.pk, err)
			}
			return false
		}
	}
	if q.ctx.Err() != nil || q.cl.Closed() {
		return false // abandoned: the client will resend it, nobody can be acked
	}
	if e.closeConn {
		q.h.closeWithoutAck(q.cl)
		return false
	}
	// A retained message is retained (with its delivery) before the PUBACK, so that a
	// subscription made after the PUBACK finds it; any other goes to subscribers after it, as
	// in mochi's processPublish, so the PUBACK does not wait for the subscribers' sessions.
	retain := e.code == Success && e.pk.FixedHeader.Retain
	if retain {
		q.deliver(e.pk)
	}
	ackErr := q.h.writeAck(q.cl, e.pk, e.code)
	if e.code == Success && !retain {
		q.deliver(e.pk) // durable: local subscribers get it even if the ack could not be written
	}
	if ackErr != nil {
		q.h.closeWithoutAck(q.cl) // the client must not wait for this ack forever
		return false
	}
	return true
}

// deliver retains and publishes pk to subscribers through mochi, as processPublish would have.
func (q *ackQueue) deliver(pk packets.Packet) {
	// The alias was resolved into TopicName before OnPublish; it belongs to cl's connection.
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	if err := q.h.srv.InjectPacket(q.inline, pk); err != nil {
		q.h.log.Error("delivering accepted publish to subscribers failed",
			"client", q.cl.ID, "topic", pk.TopicName, "err", err)
	}
}
