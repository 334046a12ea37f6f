package broker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// dummyHash is compared against when a CONNECT names an unknown user, so that unknown and known
// users take the same time to refuse. It is the hash of random bytes nobody kept.
const dummyHash = "$2a$10$ELg9SYrA6vZIT68Vq/pCH./V7K9zUdXR3hh.nVzOLf8..WFwUeumG"

// hook plugs authentication, ACLs and the Handler into mochi.
//
// Where it sits in mochi v2.7.9 (server.go processPublish, lines 865-963): OnPublish runs after
// topic-alias resolution and before retaining, delivery to subscribers and the PUBACK/PUBREC, on
// the publishing client's read goroutine. Its error decides what follows:
//   - nil: mochi retains, delivers, then acks.
//   - packets.ErrRejectPacket: mochi does nothing more (no ack, no delivery, no retain).
//   - packets.CodeSuccessIgnore: mochi acks but neither retains nor delivers (pk.Ignore).
//   - any other error: mochi either writes a PUBACK for it (MQTT 5, QoS>0; a PUBACK even for
//     QoS 2) or falls through and DELIVERS the message. The hook therefore never returns one.
type hook struct {
	mqtt.HookBase

	handler Handler
	users   users // nil: no authentication, everything allowed
	log     *slog.Logger
	stats   *counters
	ctx     context.Context // Run's context, set before mochi starts serving

	// draining holds clients whose connection the hook closed without an ack. mochi may still
	// process packets it had buffered for them; those are dropped unacknowledged too.
	draining sync.Map // *mqtt.Client -> struct{}
}

// ID implements mqtt.Hook.
func (h *hook) ID() string { return "tributary-broker" }

// Provides implements mqtt.Hook.
func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish,
		mqtt.OnSubscribed, mqtt.OnDisconnect,
	}, []byte{b})
}

// OnConnectAuthenticate checks the CONNECT credentials against the users file.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.users == nil {
		return true
	}
	u := h.users[string(pk.Connect.Username)]
	hash := dummyHash
	if u != nil {
		hash = u.PasswordHash
	}
	err := bcrypt.CompareHashAndPassword([]byte(hash), pk.Connect.Password)
	if u != nil && err == nil {
		return true
	}
	h.stats.authFailures.Add(1)
	h.log.Warn("connection refused: bad username or password",
		"client", cl.ID, "username", string(pk.Connect.Username), "remote", cl.Net.Remote, "listener", cl.Net.Listener)
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
	if h.users == nil {
		return true
	}
	u := h.users[string(cl.Properties.Username)]
	return u != nil && u.maySubscribe(topic, cl.ID)
}

// OnSubscribed logs and counts refused subscription filters.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	for i, code := range reasonCodes {
		if code < packets.ErrUnspecifiedError.Code || i >= len(pk.Filters) {
			continue
		}
		h.stats.subscribeRefused.Add(1)
		h.log.Warn("subscribe refused", "client", cl.ID, "username", string(cl.Properties.Username),
			"filter", pk.Filters[i].Filter, "reason", ReasonCode(code).String())
	}
}

// OnDisconnect forgets per-connection state.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h.draining.Delete(cl)
	h.log.Debug("client disconnected", "client", cl.ID, "remote", cl.Net.Remote, "error", err)
}

// OnPacketRead answers PUBLISH packets that mochi would drop without any ack: topic names it
// refuses in processPublish (server.go:866, e.g. "$SYS/..."). Without this a QoS 1 client would
// wait for its PUBACK forever.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName == "" ||
		strings.ContainsAny(pk.TopicName, "+#") || mqtt.IsValidFilter(pk.TopicName, true) {
		return pk, nil
	}
	h.stats.received.Add(1)
	h.count(cl, pk, TopicNameInvalid)
	if pk.FixedHeader.Qos > 0 {
		h.writeAck(cl, pk, TopicNameInvalid)
	}
	return pk, nil
}

// OnPublish hands a network client's PUBLISH to the Handler and turns its verdict into mochi's
// control flow (see the type comment).
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // Broker.Publish: local deliveries never go back to the Handler
	}
	if _, ok := h.draining.Load(cl); ok {
		return pk, packets.ErrRejectPacket
	}
	h.stats.received.Add(1)
	code := h.decide(cl, pk)
	if code == Success {
		h.stats.accepted.Add(1)
		return pk, nil
	}
	return pk, h.refuse(cl, pk, code)
}

// decide applies the publish ACL, then asks the Handler.
func (h *hook) decide(cl *mqtt.Client, pk packets.Packet) ReasonCode {
	if h.users != nil {
		u := h.users[string(cl.Properties.Username)]
		if u == nil || !u.mayPublish(pk.TopicName, cl.ID) {
			return NotAuthorized
		}
	}
	code := h.handler.HandlePublish(h.ctx, newMessage(cl, pk))
	if !code.known() {
		h.log.Error("handler returned an unknown reason code; using unspecified_error",
			"code", byte(code), "client", cl.ID, "topic", pk.TopicName)
		code = UnspecifiedError
	}
	return code
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

// refuse logs and counts a rejected message, sends what the client's protocol calls for, and
// returns the error that makes mochi neither deliver nor retain it.
func (h *hook) refuse(cl *mqtt.Client, pk packets.Packet, code ReasonCode) error {
	qos := pk.FixedHeader.Qos
	switch {
	case h.ctx.Err() != nil:
		// Shutting down: the Handler may have failed only because of that. No ack, so the
		// client publishes again after reconnecting.
		h.stats.rejected[code].Add(1)
		h.log.Warn("publish not acknowledged: broker shutting down", "client", cl.ID, "topic", pk.TopicName, "reason", code.String())
		h.closeWithoutAck(cl)
		return packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion == 5:
		h.count(cl, pk, code)
		if qos > 0 {
			h.writeAck(cl, pk, code)
		}
		return packets.ErrRejectPacket
	case code == QuotaExceeded && qos > 0:
		// MQTT 3.1.1 has no negative ack. Dropping the connection unacknowledged keeps the
		// message in the client's session, to be sent again later.
		h.count(cl, pk, code)
		h.closeWithoutAck(cl)
		return packets.ErrRejectPacket
	default:
		// MQTT 3.1.1: acknowledge and drop, or the client would resend the refused message forever.
		h.count(cl, pk, code)
		return packets.CodeSuccessIgnore
	}
}

func (h *hook) count(cl *mqtt.Client, pk packets.Packet, code ReasonCode) {
	h.stats.rejected[code].Add(1)
	h.log.Warn("publish rejected", "client", cl.ID, "username", string(cl.Properties.Username),
		"topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "protocol", cl.Properties.ProtocolVersion, "reason", code.String())
}

// writeAck sends the PUBACK (QoS 1) or PUBREC (QoS 2) for pk. MQTT 5 carries code; MQTT 3.1.1
// has no reason code and gets a plain ack. An error-coded PUBREC ends the QoS 2 exchange.
func (h *hook) writeAck(cl *mqtt.Client, pk packets.Packet, code ReasonCode) {
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    pk.PacketID,
	}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = byte(code)
		ack.Properties.ReasonString = strings.ReplaceAll(code.String(), "_", " ")
	}
	if err := cl.WritePacket(ack); err != nil {
		h.log.Debug("writing ack failed", "client", cl.ID, "error", err)
		h.closeWithoutAck(cl)
	}
}

// closeWithoutAck closes the client's connection. Closing the net.Conn (not cl.Stop) makes
// mochi's read loop fail, so it runs its normal disconnect path including the will message
// (server.go:467-471).
func (h *hook) closeWithoutAck(cl *mqtt.Client) {
	h.draining.Store(cl, struct{}{})
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.Close()
	}
}
