package broker

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// dummyHash is compared against when a CONNECT names an unknown user, so that unknown and known
// users take the same time to refuse. It is the hash of random bytes nobody kept.
const dummyHash = "$2a$10$ELg9SYrA6vZIT68Vq/pCH./V7K9zUdXR3hh.nVzOLf8..WFwUeumG"

// hook plugs authentication, ACLs and the Handler into mochi.
//
// Where it sits in mochi v2.7.9 (server.go processPublish, lines 858-967): OnPublish runs after
// topic-alias resolution and before retaining, delivery to subscribers and the PUBACK/PUBREC, on
// the publishing client's read goroutine. Its error decides what follows:
//   - nil: mochi retains, acks, then delivers.
//   - packets.ErrRejectPacket: mochi does nothing more (no ack, no delivery, no retain). Accepted
//     QoS 1 messages that must wait for durability take this way and are completed later by the
//     client's ackQueue.
//   - packets.CodeSuccessIgnore: mochi acks but neither retains nor delivers (pk.Ignore).
//   - any other error: mochi either writes a PUBACK for it (MQTT 5, QoS>0; a PUBACK even for
//     QoS 2) or falls through and DELIVERS the message. The hook therefore never returns one.
type hook struct {
	mqtt.HookBase

	handler         Handler
	accounts        *accounts // nil: no authentication, everything allowed
	apiKeys         apiKeys   // without accounts: the password must be one of them
	log             *slog.Logger
	rlog            *rateLog // for lines a client can cause at will
	stats           *counters
	srv             *mqtt.Server // for delivering queued messages
	receiveMaximum  int          // bound of each client's ackQueue
	limits          topicLimits
	auth            *authGate
	maxKeepAlive    time.Duration
	maxConnsPerUser int
	maxSessions     int
	// Advertised in MQTT 5 CONNACKs (see OnPacketEncode).
	maxPacketSize     uint32
	topicAliasMaximum uint16
	ctx               context.Context // Run's context, set before mochi starts serving

	// draining holds clients whose connection the hook closed without an ack. mochi may still
	// process packets it had buffered for them; those are dropped unacknowledged too.
	draining sync.Map // *mqtt.Client -> struct{}
	// queues holds the ackQueue of each connected client that sent a QoS 1 PUBLISH.
	queues sync.Map // *mqtt.Client -> *ackQueue
	// workers counts running ackQueue goroutines; Broker.Run waits for them.
	workers sync.WaitGroup
	// entries recycles the ackQueues' entries: one per QoS 1 PUBLISH, each
	// holding a copy of mochi's packet (~750 bytes).
	entries sync.Pool // *queued
}

// ID implements mqtt.Hook.
func (h *hook) ID() string { return "tributary-broker" }

// Provides implements mqtt.Hook. mochi asks it of every hook for every event of every packet,
// so it is a switch rather than a search.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnPacketEncode, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish,
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnDisconnect, mqtt.OnWill:
		return true
	}
	return false
}

// OnACLCheck allows every publish here (publish ACLs are enforced in OnPublish, where a refusal
// maps to a reason code; mochi's own refusal disconnects MQTT 3.1.1 clients, server.go:874) and
// checks subscriptions and deliveries against the user's subscribe filters.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	// $SYS topics are published only every sysTopicInterval; refuse them rather than serve stale values.
	if strings.HasPrefix(topic, mqtt.SysPrefix) {
		return false
	}
	if h.accounts == nil {
		return true
	}
	filter, ok := shareFilter(topic)
	if !ok {
		return false
	}
	u := h.accounts.lookup(string(cl.Properties.Username))
	return u != nil && u.maySubscribe(filter, cl.ID)
}

// OnSubscribe empties filters beyond the length and depth limits before mochi matches them
// against its topic tree, which costs time quadratic in a filter's depth (isolateParticle scans
// from the start for every level). mochi refuses an empty filter with 0x8F (MQTT 3.1.1: 0x80).
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	var filters packets.Subscriptions
	for i, sub := range pk.Filters {
		f, _ := shareFilter(sub.Filter)
		r, detail := h.limits.checkFilter(f)
		if detail == "" {
			continue
		}
		if filters == nil {
			filters = slices.Clone(pk.Filters)
		}
		filters[i].Filter = ""
		h.stats.refused[r].Add(1)
		h.stats.subscribeRefused.Add(1)
		h.rlog.Warn("subscribe refused/"+r.String(), "subscribe refused", "client", clip(cl.ID),
			"username", clip(string(cl.Properties.Username)), "filter", clip(sub.Filter), "reason", detail)
	}
	if filters != nil {
		pk.Filters = filters
	}
	return pk
}

// OnSubscribed logs and counts refused subscription filters.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	for i, code := range reasonCodes {
		if code < packets.ErrUnspecifiedError.Code || i >= len(pk.Filters) || pk.Filters[i].Filter == "" {
			continue // "": refused by OnSubscribe, counted and logged there
		}
		h.stats.subscribeRefused.Add(1)
		h.rlog.Warn("subscribe refused", "subscribe refused", "client", cl.ID, "username", string(cl.Properties.Username),
			"filter", pk.Filters[i].Filter, "reason", ReasonCode(code).String())
	}
}

// OnDisconnect forgets per-connection state and stops the client's ackQueue: outstanding
// Waits are cancelled and nothing more is acknowledged on the closed connection. It runs on the
// client's read goroutine after its last packet, so no PUBLISH of cl can be queued after it.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h.draining.Delete(cl)
	// mochi's decoder refuses the packet and closes the connection before any hook sees it; it
	// wraps the field's error and keeps ErrMalformedInvalidUTF8 only in the text (codec.go:47).
	if err != nil && (errors.Is(err, packets.ErrMalformedInvalidUTF8) || strings.Contains(err.Error(), packets.ErrMalformedInvalidUTF8.Reason)) {
		h.stats.refused[refuseInvalidUTF8].Add(1)
		h.rlog.Warn("invalid utf-8", "client disconnected: packet with a string that is not valid UTF-8 (topic, filter or property)",
			"client", clip(cl.ID), "username", clip(string(cl.Properties.Username)), "remote", cl.Net.Remote)
	}
	if h.accounts != nil {
		h.accounts.forget(cl)
	}
	if q, ok := h.queues.LoadAndDelete(cl); ok {
		q.(*ackQueue).stop()
	}
	h.log.Debug("client disconnected", "client", cl.ID, "remote", cl.Net.Remote, "err", err)
}

// OnPacketRead answers PUBLISH packets that mochi would drop without any ack: topic names it
// refuses in processPublish (server.go:859, e.g. "$SYS/..."). Without this a QoS 1 client would
// wait for its PUBACK forever.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName == "" ||
		strings.ContainsAny(pk.TopicName, "+#") || mqtt.IsValidFilter(pk.TopicName, true) {
		return pk, nil
	}
	h.stats.received.Add(1)
	h.count(cl, pk, TopicNameInvalid, "topic reserved for the broker")
	if pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	if pk.FixedHeader.Qos == 1 { // keep PUBACKs in publish order
		q := h.queueFor(cl)
		if !q.acquire() {
			return pk, nil
		}
		if q.behind() {
			q.push(h.newQueued(pk, TopicNameInvalid, nil))
			return pk, nil
		}
		q.release()
	}
	h.ackNow(cl, pk, TopicNameInvalid)
	return pk, nil
}

// OnPublish hands a network client's PUBLISH to the Handler and turns its verdict into mochi's
// control flow (see the type comment).
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // Broker.Publish and ackQueue deliveries never go back to the Handler
	}
	if _, ok := h.draining.Load(cl); ok {
		return pk, packets.ErrRejectPacket
	}
	h.stats.received.Add(1)
	if pk.FixedHeader.Qos == 1 {
		return pk, h.publishQoS1(cl, pk)
	}
	v := h.decide(cl, pk)
	if v.Code != Success {
		h.count(cl, pk, v.Code, v.Detail)
		return pk, h.refuse(cl, pk, v.Code)
	}
	if pk.FixedHeader.Qos == 2 && v.Wait != nil {
		// mochi runs the PUBREC/PUBREL exchange, so QoS 2 waits here, before the PUBREC.
		if err := v.Wait(h.ctx); err != nil {
			if h.ctx.Err() == nil {
				h.waitFailed(cl, pk, err)
			} else {
				h.closeWithoutAck(cl) // shutting down: the client resends it later
			}
			return pk, packets.ErrRejectPacket
		}
	}
	return pk, nil
}

// publishQoS1 decides on a QoS 1 PUBLISH. An answer that must wait for durability, or for the
// PUBACKs of earlier messages, goes to the client's ackQueue; anything else is answered at once.
func (h *hook) publishQoS1(cl *mqtt.Client, pk packets.Packet) error {
	q := h.queueFor(cl)
	if !q.acquire() {
		return packets.ErrRejectPacket // the queue stopped: the connection is being closed
	}
	v := h.decide(cl, pk)
	if v.Code != Success {
		h.count(cl, pk, v.Code, v.Detail)
	}
	return h.answer(q, cl, pk, v)
}

// answer answers the QoS 1 PUBLISH pk while holding one of q's slots, which it hands to the
// queue or gives back. It returns the error for mochi's processPublish.
func (h *hook) answer(q *ackQueue, cl *mqtt.Client, pk packets.Packet, v Verdict) error {
	if !q.behind() && (v.Code != Success || v.Wait == nil) {
		q.release()
		if v.Code == Success {
			return nil // durable already and nothing queued: mochi delivers and acks
		}
		return h.refuse(cl, pk, v.Code)
	}
	e := h.newQueued(pk, v.Code, v.Wait)
	if v.Code != Success && h.refusalCloses(cl, pk, v.Code) {
		h.draining.Store(cl, struct{}{}) // later PUBLISHes are dropped unacknowledged
		e.closeConn = true
	}
	q.push(e)
	return packets.ErrRejectPacket
}

func (h *hook) queueFor(cl *mqtt.Client) *ackQueue {
	if q, ok := h.queues.Load(cl); ok {
		return q.(*ackQueue)
	}
	q := newAckQueue(h, cl)
	h.queues.Store(cl, q) // only cl's read goroutine gets here
	return q
}

// decide applies the topic limits and the publish ACL, then asks the Handler.
func (h *hook) decide(cl *mqtt.Client, pk packets.Packet) Verdict {
	if r, detail := h.limits.checkTopic(pk.TopicName); detail != "" {
		h.stats.refused[r].Add(1)
		return Verdict{Code: TopicNameInvalid, Detail: detail}
	}
	if h.accounts != nil {
		u := h.accounts.lookup(string(cl.Properties.Username))
		if u == nil || !u.mayPublish(pk.TopicName, cl.ID) {
			return Verdict{Code: NotAuthorized, Detail: "outside the user's publish ACL"}
		}
	}
	v := h.handler.HandlePublish(h.ctx, newMessage(cl, pk))
	switch {
	case v.Code == Success:
		h.stats.accepted.Add(1)
		if pk.FixedHeader.Qos == 0 {
			v.Wait = nil // fire and forget
		}
	case !knownCode(v.Code):
		h.log.Error("handler returned an unknown reason code; using unspecified_error",
			"code", byte(v.Code), "client", cl.ID, "topic", pk.TopicName)
		v.Code = UnspecifiedError
	}
	if v.Code != Success {
		v.Wait = nil
	}
	return v
}

func newMessage(cl *mqtt.Client, pk packets.Packet) *Message {
	m := &Message{
		ClientID:        cl.ID,
		Username:        string(cl.Properties.Username),
		Topic:           pk.TopicName,
		Payload:         pk.Payload,
		QoS:             pk.FixedHeader.Qos,
		Retain:          pk.FixedHeader.Retain,
		ProtocolVersion: cl.Properties.ProtocolVersion,
	}
	if m.ProtocolVersion == 5 {
		m.ContentType = pk.Properties.ContentType
		m.PayloadFormatUTF8 = pk.Properties.PayloadFormatFlag && pk.Properties.PayloadFormat == 1
		if n := len(pk.Properties.User); n > 0 {
			m.UserProperties = make([]UserProperty, n)
			for i, p := range pk.Properties.User {
				m.UserProperties[i] = UserProperty{Key: p.Key, Value: p.Val}
			}
		}
	}
	return m
}

// refusalCloses reports whether a refused PUBLISH is answered by closing the connection without
// an ack (so that the client keeps the message and sends it again later) rather than by an ack.
func (h *hook) refusalCloses(cl *mqtt.Client, pk packets.Packet, code ReasonCode) bool {
	switch {
	case pk.FixedHeader.Qos == 0:
		return false
	case h.ctx.Err() != nil:
		// Shutting down: the Handler may have failed only because of that.
		h.log.Warn("publish not acknowledged: broker shutting down", "client", cl.ID, "topic", pk.TopicName, "reason", code.String())
		return true
	default:
		// MQTT 3.1.1 has no negative ack; other refusals are acknowledged and dropped, or the
		// client would resend them forever.
		return code == QuotaExceeded && cl.Properties.ProtocolVersion != 5
	}
}

// refuse answers a refused PUBLISH at once and returns the error that makes mochi neither
// deliver nor retain it.
func (h *hook) refuse(cl *mqtt.Client, pk packets.Packet, code ReasonCode) error {
	switch {
	case h.refusalCloses(cl, pk, code):
		h.closeWithoutAck(cl)
		return packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion == 5:
		if pk.FixedHeader.Qos > 0 {
			h.ackNow(cl, pk, code)
		}
		return packets.ErrRejectPacket
	default:
		// MQTT 3.1.1: mochi acks (and runs the QoS 2 exchange) without delivering.
		return packets.CodeSuccessIgnore
	}
}

// count counts and logs a refused PUBLISH: the one log line of a refusal, rate-limited per
// reason, without the payload.
func (h *hook) count(cl *mqtt.Client, pk packets.Packet, code ReasonCode, detail string) {
	h.stats.rejected[code].Add(1)
	h.rlog.Warn("publish rejected/"+code.String(), "publish rejected", "client", cl.ID, "username", string(cl.Properties.Username),
		"topic", clip(pk.TopicName), "qos", pk.FixedHeader.Qos, "protocol", cl.Properties.ProtocolVersion, "reason", code.String(), "detail", clip(detail))
}

// waitFailed handles an accepted message that did not become durable: no ack, and the
// connection is closed so that the client sends it again.
func (h *hook) waitFailed(cl *mqtt.Client, pk packets.Packet, err error) {
	h.stats.waitFailed.Add(1)
	h.log.Error("publish not acknowledged: not stored durably; closing the connection",
		"client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "err", err)
	h.closeWithoutAck(cl)
}

// ackNow writes pk's ack and closes the connection if that fails.
func (h *hook) ackNow(cl *mqtt.Client, pk packets.Packet, code ReasonCode) {
	if err := h.writeAck(cl, pk, code); err != nil {
		h.closeWithoutAck(cl)
	}
}

// writeAck sends the PUBACK (QoS 1) or PUBREC (QoS 2) for pk. MQTT 5 carries code (and for a
// refusal a reason string); MQTT 3.1.1 has no reason code and gets a plain ack. An error-coded
// PUBREC ends the QoS 2 exchange. Unlike mochi's buildAck (server.go:1137), the ack does not
// echo the PUBLISH's user properties: they would only cost the sensor bandwidth.
func (h *hook) writeAck(cl *mqtt.Client, pk packets.Packet, code ReasonCode) error {
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    pk.PacketID,
	}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = byte(code)
		if code != Success {
			ack.Properties.ReasonString = strings.ReplaceAll(code.String(), "_", " ")
		}
	}
	if err := cl.WritePacket(ack); err != nil {
		h.log.Debug("writing ack failed", "client", cl.ID, "err", err)
		return err
	}
	return nil
}

// closeWithoutAck closes the client's connection. Closing the net.Conn (not cl.Stop) makes
// mochi's read loop fail, so it runs its normal disconnect path including the will message
// (server.go:476-478).
func (h *hook) closeWithoutAck(cl *mqtt.Client) {
	h.draining.Store(cl, struct{}{})
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.Close()
	}
}
