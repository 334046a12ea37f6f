package broker

import (
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// droppedWillTopic replaces the topic of a Will the Handler refused: mochi publishes every Will
// it holds (server.go:1516-1552), and nobody may receive $SYS topics (see OnACLCheck).
const droppedWillTopic = "$SYS/tributary/dropped-will"

// OnConnectAuthenticate admits a CONNECT whose credentials match the users file, whose client ID
// does not name another user's session, and whose Will topic the user may publish to.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.accounts == nil {
		if code := h.apiKeys.check(pk.ProtocolVersion == 5, pk.Connect.PasswordFlag, pk.Connect.Password); code != packets.CodeSuccess {
			h.stats.authFailures.Add(1)
			h.rlog.Warn("auth", "connection refused: API key missing or wrong",
				"client", clip(cl.ID), "remote", cl.Net.Remote, "listener", cl.Net.Listener)
			return h.refuseConnect(cl, code)
		}
		return h.admitSession(cl, pk)
	}
	u, code := h.checkPassword(cl, pk)
	if u == nil {
		return h.refuseConnect(cl, code)
	}
	if !h.admitUser(cl, u.Name) {
		return h.refuseConnect(cl, packets.ErrQuotaExceeded)
	}
	if !h.ownsSession(cl, u) {
		return false
	}
	if pk.Connect.WillFlag && !u.mayPublish(pk.Connect.WillTopic, cl.ID) {
		h.stats.refused[refuseWillACL].Add(1)
		h.rlog.Warn("will refused", "connection refused: will topic outside the user's publish ACL",
			"client", clip(cl.ID), "username", u.Name, "will_topic", clip(pk.Connect.WillTopic), "remote", cl.Net.Remote)
		return h.refuseConnect(cl, packets.ErrNotAuthorized)
	}
	if !h.admitSession(cl, pk) {
		return false
	}
	// admit fails if a reload replaced the user meanwhile: the password was checked against
	// credentials no longer in force.
	if !h.accounts.admit(cl, u) {
		return h.refuseConnect(cl, packets.ErrBadUsernameOrPassword)
	}
	return true
}

// checkPassword runs authenticate within the bcrypt concurrency limit and the failure backoff
// of the source address and user name; for a refusal it returns the CONNACK code.
func (h *hook) checkPassword(cl *mqtt.Client, pk packets.Packet) (*user, packets.Code) {
	source, name := sourceIP(cl.Net.Remote), string(pk.Connect.Username)
	for {
		if !h.waitBackoff(cl, source, name) {
			return nil, packets.ErrServerShuttingDown
		}
		if !h.auth.acquire(h.ctx) {
			h.stats.refused[refuseAuthBackoff].Add(1)
			h.rlog.Warn("auth busy", "connection refused: too many password checks waiting",
				"client", clip(cl.ID), "remote", cl.Net.Remote)
			return nil, packets.ErrServerBusy
		}
		// Waiters woken together: only those still out of backoff once they hold a slot go on.
		if h.auth.delay(source, name, time.Now()) == 0 {
			h.auth.begin(source, name)
			break
		}
		h.auth.release()
	}
	u := h.authenticate(cl, pk)
	h.auth.release()
	h.auth.result(source, name, u != nil, time.Now())
	return u, packets.ErrBadUsernameOrPassword
}

// waitBackoff waits while source or name is in backoff; false if the broker stops meanwhile.
func (h *hook) waitBackoff(cl *mqtt.Client, source, name string) bool {
	d := h.auth.delay(source, name, time.Now())
	if d == 0 {
		return true
	}
	h.stats.refused[refuseAuthBackoff].Add(1)
	h.rlog.Warn("auth backoff", "password check delayed: source or user in backoff after failed passwords",
		"client", clip(cl.ID), "username", clip(name), "remote", cl.Net.Remote, "delay", d)
	for ; d > 0; d = h.auth.delay(source, name, time.Now()) {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-h.ctx.Done():
			t.Stop()
			return false
		}
	}
	return true
}

// authenticate returns the user whose password the CONNECT carries, or nil (logged, counted).
func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet) *user {
	name := string(pk.Connect.Username)
	u := h.accounts.lookup(name)
	hash := dummyHash
	if u != nil {
		hash = u.PasswordHash
	}
	err := bcrypt.CompareHashAndPassword([]byte(hash), pk.Connect.Password)
	if u != nil && err == nil {
		return u
	}
	h.stats.authFailures.Add(1)
	h.rlog.Warn("auth", "connection refused: bad username or password",
		"client", clip(cl.ID), "username", clip(name), "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	return nil
}

// ownsSession refuses a CONNECT whose client ID names a session (connected or stored) that
// another user created: mochi would hand that session over (inheritClientSession, with its
// subscriptions and queued messages) and disconnect its owner. A session belongs to the user
// who created it.
func (h *hook) ownsSession(cl *mqtt.Client, u *user) bool {
	existing, ok := h.srv.Clients.Get(cl.ID)
	if !ok {
		return true
	}
	owner := string(existing.Properties.Username)
	if owner == u.Name {
		if !existing.Closed() {
			h.log.Info("session taken over by a new connection of its user",
				"client", clip(cl.ID), "username", u.Name, "remote", cl.Net.Remote, "previous_remote", existing.Net.Remote)
		}
		return true
	}
	h.stats.refused[refuseTakeover].Add(1)
	h.rlog.Warn("takeover", "connection refused: client ID belongs to another user's session",
		"client", clip(cl.ID), "username", u.Name, "owner", owner, "remote", cl.Net.Remote)
	return h.refuseConnect(cl, packets.ErrClientIdentifierNotValid)
}

// admitSession refuses a CONNECT that would create a new persistent session once the broker
// holds MaxSessions sessions (connected or stored): each stored session keeps a subscription
// set and a message queue in memory. Clean sessions and resumed ones are not refused.
func (h *hook) admitSession(cl *mqtt.Client, pk packets.Packet) bool {
	persistent := !pk.Connect.Clean
	if pk.ProtocolVersion == 5 {
		persistent = pk.Properties.SessionExpiryInterval > 0
	}
	if !persistent || h.maxSessions <= 0 {
		return true
	}
	if _, resumed := h.srv.Clients.Get(cl.ID); resumed || h.srv.Clients.Len() < h.maxSessions {
		return true
	}
	h.stats.refused[refuseSessions].Add(1)
	h.rlog.Warn("sessions full", "connection refused: the broker holds the maximum number of sessions",
		"client", clip(cl.ID), "username", clip(string(cl.Properties.Username)), "limit", h.maxSessions, "remote", cl.Net.Remote)
	return h.refuseConnect(cl, packets.ErrQuotaExceeded)
}

// refuseConnect answers a CONNECT with code (mapped for MQTT 3.1.1, see OnPacketEncode) and closes the
// connection; it returns false for OnConnectAuthenticate. mochi's own CONNACK for the refusal
// then fails on the closed connection, so the client sees exactly this one.
func (h *hook) refuseConnect(cl *mqtt.Client, code packets.Code) bool {
	_ = h.srv.SendConnack(cl, code, false, nil)
	cl.Stop(code)
	return false
}

// OnPacketEncode completes mochi's CONNACKs. MQTT 5: a successful CONNACK advertises the
// Maximum Packet Size and Topic Alias Maximum the broker enforces (mochi sends neither), so
// clients do not learn them by being disconnected. MQTT 3.1.1 allows only return codes 0-5:
// mochi sends some MQTT 5 codes as they are (an empty client ID with clean=false is 0x80,
// server.go:544; an unsupported protocol level 0x82), which map onto 3.1.1's codes here.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	switch {
	case cl.Properties.ProtocolVersion != 5 && pk.ReasonCode > packets.Err3NotAuthorized.Code:
		pk.ReasonCode = v3ConnackCode(pk.ReasonCode)
		pk.SessionPresent = false
	case cl.Properties.ProtocolVersion == 5 && pk.ReasonCode == packets.CodeSuccess.Code:
		pk.Properties.MaximumPacketSize = h.maxPacketSize
		pk.Properties.TopicAliasMaximum = h.topicAliasMaximum
	}
	return pk
}

// v3ConnackCode maps an MQTT 5 CONNACK reason onto an MQTT 3.1.1 return code.
func v3ConnackCode(code byte) byte {
	switch code {
	case packets.ErrUnspecifiedError.Code, packets.ErrClientIdentifierNotValid.Code:
		return packets.Err3ClientIdentifierNotValid.Code // 0x80 comes only from an empty client ID, clean=false
	case packets.ErrProtocolViolation.Code, packets.ErrUnsupportedProtocolVersion.Code:
		return packets.Err3UnsupportedProtocolVersion.Code
	case packets.ErrBadUsernameOrPassword.Code, packets.ErrMalformedUsername.Code:
		return packets.ErrMalformedUsernameOrPassword.Code
	case packets.ErrNotAuthorized.Code, packets.ErrBanned.Code:
		return packets.Err3NotAuthorized.Code
	default:
		return packets.Err3ServerUnavailable.Code
	}
}

// OnWill puts a Will through the same ACL, mapping and pipeline as any PUBLISH of its client
// when mochi is about to publish it. A refused Will is not published (see droppedWillTopic).
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
		Properties:  packets.Properties{User: will.User},
	}
	h.stats.received.Add(1)
	v := h.decide(cl, pk)
	if v.Code == Success && v.Wait != nil {
		if err := v.Wait(h.ctx); err != nil {
			v = Verdict{Code: UnspecifiedError, Detail: "will not stored durably: " + err.Error()}
		}
	}
	if v.Code == Success {
		return will, nil
	}
	h.count(cl, pk, v.Code, "will: "+v.Detail)
	return mqtt.Will{TopicName: droppedWillTopic}, nil
}

// shareFilter returns the filter of a subscription, without the "$share/<group>/" prefix of a
// shared subscription: the ACL is about the topics, not the group. ok is false for a malformed
// shared subscription.
func shareFilter(filter string) (string, bool) {
	const prefix = "$share/" // mochi matches it case-insensitively (topics.go:729)
	if len(filter) < len(prefix) || !strings.EqualFold(filter[:len(prefix)], prefix) {
		return filter, true
	}
	group, f, ok := strings.Cut(filter[len(prefix):], "/")
	return f, ok && group != "" && f != "" && !strings.ContainsAny(group, "+#")
}
