package broker

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Session record keys (values are JSON). Client IDs cannot contain U+0000 (MQTT 1.5.4), so
// \x00 separates them from what follows.
//
//	c/<client>                client (mochi's storage.Client plus the disconnect time)
//	s/<client>\x00<filter>    subscription
//	q/<client>\x00<seq hex>   queued or in-flight message, in queueing order
//	r/<topic>                 retained message
//	m/<key>                   delivery mark (PublishMarked)
const (
	prefixClient = "c/"
	prefixSub    = "s/"
	prefixQueued = "q/"
	prefixRetain = "r/"
	prefixMark   = "m/"
)

// sessions is the mochi hook that keeps persistent sessions (MQTT 3.1.1 clean session 0, MQTT 5
// session expiry > 0) in a SessionStore, and repairs two behaviours of mochi v2.7.9 that break
// persistent sessions:
//   - after a reconnect mochi resends a session's messages sorted by uint16(Created), the second
//     they were created (inflight.go:74): out of order. The hook takes the messages over before
//     mochi inherits the session (OnSessionEstablish) and resends them itself, in the order they
//     were queued, before any newer message (OnSessionEstablished, OnPacketEncode).
//   - mochi refuses a SUBSCRIBE or UNSUBSCRIBE whose packet ID equals that of a message it sends
//     to the client (server.go:1244, 1318) with 0x91, invalid in MQTT 3.1.1; the two directions'
//     IDs are independent (MQTT 5 2.2.1). The hook hides the colliding message for the length of
//     the check (OnPacketRead, OnSubscribed/OnUnsubscribed).
//
// A message for a persistent session is written to the store before it is sent (OnPacketEncode
// waits for its batch), so a client never acknowledges a message that a crash could bring back.
//
// Per-session limits: a session holds at most maxMessages messages and maxBytes bytes (topic plus
// payload) queued or in flight; a new message beyond either drops the session's oldest ones,
// counted by reason and logged at most once a minute per session.
//
// The total limit: all sessions together hold at most maxTotal bytes, each message counted with
// queuedOverhead for the broker's own copy of it. A new message beyond drops the oldest queued
// message of any session (first queued, first dropped): offline sessions piling up readings lose
// their oldest, while connected consumers, whose messages are acknowledged as they come, keep
// getting theirs. Counted as limit "total_bytes", logged once per log repeat interval.
type sessions struct {
	mqtt.HookBase

	srv         *mqtt.Server
	commit      *committer
	log         *slog.Logger
	rlog        *rateLog
	maxMessages int
	maxBytes    int64
	maxTotal    int64
	ctx         context.Context // Run's context; set before mochi serves

	mu      sync.Mutex
	byID    map[string]*session
	nextSeq uint64
	all     *list.List // every session's *queuedMsg, in the order indexed
	total   int64      // bytes of all, queuedOverhead included

	replays sync.Map       // *mqtt.Client -> *replay: set from OnSessionEstablish until its resend is done
	late    sync.WaitGroup // sendLate goroutines; Broker.Run waits for them
	hidden  sync.Map       // *mqtt.Client -> packets.Packet: hidden for a SUBSCRIBE/UNSUBSCRIBE check
	gates   *clientGates   // released by the listeners as mochi is done with a connection

	stats sessionCounters
}

// session is the broker's index of one client ID's queued messages.
type session struct {
	owner      *mqtt.Client        // the connection that established it last
	persistent bool                // messages for it are stored
	stored     bool                // records of it may be in the store
	subs       map[string]struct{} // filters stored for the session
	msgs       map[uint16]*queuedMsg
	order      *list.List // of *queuedMsg, oldest first
	bytes      int64
	lastWarn   time.Time
}

type queuedMsg struct {
	client string
	seq    uint64
	pid    uint16
	size   int64
	batch  uint64 // durable once this batch is committed (0: loaded, or not stored)
	stored bool
	elem   *list.Element // in its session's order
	all    *list.Element // in sessions.all
}

// queuedOverhead is what a queued message costs beyond its topic and payload, for the total
// limit: mochi's packet with its properties, its inflight map entry, this index and the stored
// copy's buffers. TestSessionsTotalBytes measured 1.5 KiB of heap per queued message.
const queuedOverhead = 1536

// replay is a reconnected session's resend: its messages in queueing order, sent before any
// other PUBLISH to the client.
type replay struct {
	msgs    []packets.Packet // set by takeOver, on the client's goroutine like the replay
	started atomic.Bool      // mochi's own resend is over; the replay writes

	mu      sync.Mutex
	listing bool         // takeOver has run: handOver adopts directly
	extra   []handedOver // handed over before takeOver, for it to adopt
	done    chan struct{}
}

type handedOver struct {
	pk  packets.Packet
	seq uint64
}

type sessionCounters struct {
	droppedMessages, droppedBytes, droppedTotal, replayed atomic.Uint64
}

// clientRecord is a stored session.
type clientRecord struct {
	storage.Client
	Disconnected int64 `json:"disconnected,omitempty"` // unix seconds; 0 while connected
}

// sessionLimits are the bounds of queued messages (see sessions).
type sessionLimits struct {
	maxMessages        int
	maxBytes, maxTotal int64
}

func newSessions(srv *mqtt.Server, store SessionStore, limits sessionLimits, log *slog.Logger, rlog *rateLog) *sessions {
	return &sessions{
		srv: srv, commit: newCommitter(store, log), log: log, rlog: rlog,
		maxMessages: limits.maxMessages, maxBytes: limits.maxBytes, maxTotal: limits.maxTotal,
		byID: make(map[string]*session), nextSeq: 1, all: list.New(), gates: newClientGates(),
	}
}

// ID implements mqtt.Hook.
func (h *sessions) ID() string { return "tributary-sessions" }

// Provides implements mqtt.Hook (a switch: mochi asks it for every event of every packet).
func (h *sessions) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnPacketEncode,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired, mqtt.OnQosPublish, mqtt.OnQosComplete,
		mqtt.OnQosDropped, mqtt.OnPublishDropped, mqtt.OnClientExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages:
		return true
	}
	return false
}

// persistent reports whether cl's session outlives its connection (mochi's rule, server.go:489).
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// OnConnect turns off outbound topic aliases for persistent sessions: an alias is only valid on
// the connection that set it, and a stored message must carry its topic name.
func (h *sessions) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if persistent(cl) {
		cl.Properties.Props.TopicAliasMaximum = 0
	}
	return nil
}

// OnSessionEstablish runs before mochi inherits an existing session: it records whether the
// new connection's session persists, and forgets the old one on a clean start.
func (h *sessions) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Conn != nil {
		h.gates.hold(h.ctx, cl.ID, cl.Net.Conn) // until the CONNACK is encoded (OnPacketEncode)
	}
	if pk.Connect.Clean {
		h.forget(cl.ID) // a clean start discards the previous session (MQTT-3.1.2-4)
	}
	h.mu.Lock()
	s := h.sessionFor(cl.ID)
	s.owner, s.persistent = cl, persistent(cl)
	s.stored = s.stored || s.persistent
	h.mu.Unlock()
	if existing, ok := h.srv.Clients.Get(cl.ID); ok && !pk.Connect.Clean &&
		!(existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		// mochi will inherit the session: newer PUBLISHes wait for its replay (OnPacketEncode).
		h.replays.Store(cl, &replay{done: make(chan struct{})})
	}
}

// takeOver lists an inherited session's outbound messages for the replay, in queueing order.
// It runs as the CONNACK is encoded: after mochi copied the session (server.go:576) and made cl
// the session's client, before mochi resends the copies unordered (server.go:468), which
// OnPacketEncode suppresses. The messages stay in mochi's inflight map, so their packet IDs
// stay taken.
func (h *sessions) takeOver(cl *mqtt.Client) {
	v, ok := h.replays.Load(cl)
	if !ok {
		return
	}
	r := v.(*replay)
	r.mu.Lock()
	r.listing = true
	extra := r.extra
	r.extra = nil
	r.mu.Unlock()
	for _, e := range extra { // mochi has set up cl's session by now
		h.adopt(cl, e.pk, e.seq)
	}
	var taken []packets.Packet
	for _, m := range cl.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type == packets.Publish || m.FixedHeader.Type == packets.Pubrel {
			taken = append(taken, m)
		}
	}
	seqs := make(map[uint16]uint64, len(taken))
	h.mu.Lock()
	if s := h.byID[cl.ID]; s != nil {
		for _, m := range taken {
			if q := s.msgs[m.PacketID]; q != nil {
				seqs[m.PacketID] = q.seq
			}
		}
	}
	h.mu.Unlock()
	sortPackets(taken, func(pid uint16) uint64 { return seqs[pid] })
	r.msgs = taken
}

// OnSessionEstablished stores the session and resends its messages in queueing order. It runs
// on the client's goroutine after the CONNACK and before mochi reads the next packet.
func (h *sessions) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.putClient(cl, 0)
	v, ok := h.replays.Load(cl)
	if !ok {
		return
	}
	r := v.(*replay)
	defer func() {
		h.replays.Delete(cl)
		close(r.done)
	}()
	r.started.Store(true)
	for _, m := range r.msgs {
		if m.FixedHeader.Type == packets.Publish {
			m.FixedHeader.Dup = true // [MQTT-3.3.1-1]
		}
		if err := cl.WritePacket(m); err != nil {
			h.log.Debug("resending session messages stopped", "client", cl.ID, "err", err)
			return // the rest stay in the session for the next connection
		}
		h.stats.replayed.Add(1)
	}
}

// OnDisconnect stores when a persistent session was left, or forgets a session that ends.
func (h *sessions) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.IsTakenOver() || cl.Net.Conn == nil {
		return // the new connection owns the session now, or mochi is restoring it (server.go:1670)
	}
	if expire {
		// Until mochi has deleted the client (the listener releases the gate then), a new
		// connection of the ID waits; one that got in first has taken this one over by now.
		h.gates.hold(h.ctx, cl.ID, cl.Net.Conn)
		if cl.IsTakenOver() {
			return
		}
		h.mu.Lock()
		s := h.byID[cl.ID]
		mine := s == nil || s.owner == cl
		h.mu.Unlock()
		if mine { // else a newer connection has established the session already
			h.forget(cl.ID)
		}
		return
	}
	h.putClient(cl, time.Now().Unix())
}

// OnClientExpired forgets a session whose expiry interval has passed.
func (h *sessions) OnClientExpired(cl *mqtt.Client) { h.forget(cl.ID) }

// OnPacketRead hides an outbound message whose packet ID a SUBSCRIBE or UNSUBSCRIBE reuses,
// until OnSubscribed/OnUnsubscribed puts it back. cl's lock is held meanwhile, so mochi cannot
// hand the ID to another message (NextPacketID takes it); between here and OnSubscribed mochi
// takes no client lock (server.go:668-733, 1241-1304, 1316-1357).
func (h *sessions) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	t := pk.FixedHeader.Type
	if (t != packets.Subscribe && t != packets.Unsubscribe) || cl.Net.Inline {
		return pk, nil
	}
	valid := pk.SubscribeValidate
	if t == packets.Unsubscribe {
		valid = pk.UnsubscribeValidate
	}
	if valid() != packets.CodeSuccess {
		return pk, nil // mochi refuses it before OnSubscribed (server.go:693-701)
	}
	m, ok := cl.State.Inflight.Get(pk.PacketID)
	if !ok || (m.FixedHeader.Type != packets.Publish && m.FixedHeader.Type != packets.Pubrel) {
		return pk, nil // free, or an inbound QoS 2 exchange: really in use
	}
	cl.Lock()
	cl.State.Inflight.Delete(pk.PacketID)
	h.hidden.Store(cl, m)
	return pk, nil
}

// restoreHidden puts back a message hidden by OnPacketRead.
func (h *sessions) restoreHidden(cl *mqtt.Client) {
	if v, ok := h.hidden.LoadAndDelete(cl); ok {
		cl.State.Inflight.Set(v.(packets.Packet))
		cl.Unlock()
	}
}

// OnSubscribed stores a persistent session's new subscriptions.
func (h *sessions) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.restoreHidden(cl)
	if !persistent(cl) || cl.Net.Inline {
		return
	}
	h.mu.Lock()
	s := h.sessionFor(cl.ID)
	h.mu.Unlock()
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		rec := storage.Subscription{
			Client: cl.ID, Filter: f.Filter, Identifier: f.Identifier, RetainHandling: f.RetainHandling,
			Qos: f.Qos, RetainAsPublished: f.RetainAsPublished, NoLocal: f.NoLocal,
		}
		h.mu.Lock()
		s.subs[f.Filter] = struct{}{}
		h.mu.Unlock()
		h.putJSON(subKey(cl.ID, f.Filter), rec)
	}
}

// OnUnsubscribed deletes removed subscriptions.
func (h *sessions) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.restoreHidden(cl)
	h.mu.Lock()
	s := h.byID[cl.ID]
	for _, f := range pk.Filters {
		if s != nil {
			delete(s.subs, f.Filter)
		}
	}
	h.mu.Unlock()
	for _, f := range pk.Filters {
		h.commit.put(subKey(cl.ID, f.Filter), nil)
	}
}

// OnQosPublish indexes (and for a persistent session stores) a message newly queued for cl,
// then applies the session's limits.
func (h *sessions) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	if resends > 0 || cl.Net.Inline || pk.FixedHeader.Type != packets.Publish {
		return
	}
	if cl.IsTakenOver() {
		h.handOver(cl, pk)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.index(cl, pk, 0)
}

// index records (and for a persistent session stores) pk, queued for cl as number seq (0: the
// next), then applies the session's limits. h.mu is held.
func (h *sessions) index(cl *mqtt.Client, pk packets.Packet, seq uint64) {
	s := h.sessionFor(cl.ID)
	if s.msgs[pk.PacketID] != nil {
		return // mochi's resend at reconnect (clients.go:314) of a message indexed already
	}
	if seq == 0 {
		seq = h.nextSeq
		h.nextSeq++
	}
	m := &queuedMsg{client: cl.ID, seq: seq, pid: pk.PacketID, size: int64(len(pk.TopicName) + len(pk.Payload))}
	h.track(s, m)
	if s.persistent {
		m.batch = h.putJSON(queuedKey(cl.ID, m.seq), messageRecord(cl.ID, pk))
		m.stored = true
	}
	h.enforceLimits(cl, s)
	h.enforceTotal()
}

// track adds m to its session's index and to the total. h.mu is held.
func (h *sessions) track(s *session, m *queuedMsg) {
	m.elem = s.order.PushBack(m)
	m.all = h.all.PushBack(m)
	s.msgs[m.pid] = m
	s.bytes += m.size
	h.total += m.size + queuedOverhead
}

// handOver moves a message published to a connection while mochi hands its session to a new
// one (publishToSubscribers looked the old one up first): mochi would lose it with the old
// connection. Before takeOver the new connection's session is still being set up by mochi
// (server.go:574 assigns it unsynchronised), so the message waits in the replay for takeOver
// to adopt; after, it is adopted and sent at once (sendLate).
func (h *sessions) handOver(old *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	var owner *mqtt.Client
	if s := h.byID[old.ID]; s != nil {
		owner = s.owner
	}
	seq := h.nextSeq // its place in the queue is now, not when it is adopted
	h.nextSeq++
	h.mu.Unlock()
	if owner == nil || owner == old {
		return
	}
	old.State.Inflight.Delete(pk.PacketID)
	if v, ok := h.replays.Load(owner); ok {
		r := v.(*replay)
		r.mu.Lock()
		if !r.listing {
			r.extra = append(r.extra, handedOver{pk, seq})
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
	if pk, ok := h.adopt(owner, pk, seq); ok {
		h.sendLate(owner, pk)
	}
}

// adopt queues pk for cl under a packet ID of cl's.
func (h *sessions) adopt(cl *mqtt.Client, pk packets.Packet, seq uint64) (packets.Packet, bool) {
	id, err := cl.NextPacketID()
	if err != nil {
		h.stats.droppedMessages.Add(1)
		h.log.Warn("session takeover: no packet ID left for a message; dropped", "client", cl.ID)
		return pk, false
	}
	pk.PacketID = uint16(id)
	cl.State.Inflight.Set(pk)
	h.mu.Lock()
	h.index(cl, pk, seq)
	h.mu.Unlock()
	return pk, true
}

// sendLate sends a message adopted after takeOver, once cl's replay is done. It may come after
// messages published just after it; without it the message would wait for the next
// connection. It writes from its own goroutine: the caller may hold the committer's group
// lock, which the write's wait for the commit needs.
func (h *sessions) sendLate(cl *mqtt.Client, pk packets.Packet) {
	v, ok := h.replays.Load(cl)
	h.late.Go(func() {
		if ok {
			select {
			case <-v.(*replay).done:
			case <-h.ctx.Done():
				return
			}
		}
		_ = cl.WritePacket(pk) // on failure it stays in the session for the next connection
	})
}

// enforceLimits drops a session's oldest messages while it is over a limit. h.mu is held.
func (h *sessions) enforceLimits(cl *mqtt.Client, s *session) {
	for s.order.Len() > 1 && (s.order.Len() > h.maxMessages || s.bytes > h.maxBytes) {
		reason := "messages"
		if s.order.Len() <= h.maxMessages {
			reason = "bytes"
			h.stats.droppedBytes.Add(1)
		} else {
			h.stats.droppedMessages.Add(1)
		}
		h.drop(cl, s, s.order.Front().Value.(*queuedMsg))
		if now := time.Now(); now.Sub(s.lastWarn) >= time.Minute {
			s.lastWarn = now
			h.log.Warn("session queue full: dropping its oldest messages", "client", cl.ID, "limit", reason,
				"max_messages", h.maxMessages, "max_bytes", h.maxBytes,
				"dropped_total", h.stats.droppedMessages.Load()+h.stats.droppedBytes.Load())
		}
	}
}

// drop removes m, queued for cl's session s, from mochi and from the index and store. h.mu is
// held.
func (h *sessions) drop(cl *mqtt.Client, s *session, m *queuedMsg) {
	if cl != nil && cl.State.Inflight.Delete(m.pid) {
		cl.State.Inflight.IncreaseSendQuota()
		atomic.AddInt64(&h.srv.Info.Inflight, -1)
	}
	h.unindex(s, m)
	if m.stored {
		h.commit.put(queuedKey(m.client, m.seq), nil)
	}
}

// enforceTotal drops the oldest queued messages of any session while all of them together
// are over the total limit. h.mu is held.
func (h *sessions) enforceTotal() {
	if h.maxTotal <= 0 {
		return
	}
	for h.total > h.maxTotal && h.all.Len() > 1 {
		m := h.all.Front().Value.(*queuedMsg)
		s := h.byID[m.client]
		if s == nil || s.msgs[m.pid] != m { // not indexed by a session: only the total counts it
			h.all.Remove(m.all)
			h.total -= m.size + queuedOverhead
			continue
		}
		cl, _ := h.srv.Clients.Get(m.client) // mochi keeps a disconnected session's client
		h.drop(cl, s, m)
		n := h.stats.droppedTotal.Add(1)
		h.rlog.Warn("session total full", "sessions hold max_queued_bytes: dropping the oldest queued message",
			"client", clip(m.client), "max_queued_bytes", h.maxTotal, "dropped_total", n)
	}
}

// OnQosComplete forgets a message the client acknowledged.
func (h *sessions) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { h.done(cl, pk.PacketID) }

// OnQosDropped forgets a message mochi gave up, unless mochi is only clearing the copy a session
// takeover left behind (server.go:595).
func (h *sessions) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if !cl.IsTakenOver() {
		h.done(cl, pk.PacketID)
		return
	}
	// mochi copied the session's messages to the new connection (server.go:576), but one
	// published in between landed on the old one only: hand it over too.
	h.mu.Lock()
	var owner *mqtt.Client
	if s := h.byID[cl.ID]; s != nil && s.msgs[pk.PacketID] != nil {
		owner = s.owner
	}
	h.mu.Unlock()
	if owner != nil && owner != cl && pk.FixedHeader.Type == packets.Publish {
		if m, ok := owner.State.Inflight.Get(pk.PacketID); !ok {
			owner.State.Inflight.Set(pk)
		} else if m.Created != pk.Created || m.TopicName != pk.TopicName || !bytes.Equal(m.Payload, pk.Payload) {
			h.log.Warn("session takeover: two messages share a packet ID; one is dropped", "client", cl.ID, "packet_id", pk.PacketID)
		}
	}
}

// OnPublishDropped forgets a QoS>0 message mochi dropped for a full outbound queue (it also
// removed it from the session, server.go:1105); a session holds more only when QoS 0 messages
// fill the queue. Counted with the session's dropped messages.
func (h *sessions) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 {
		return
	}
	h.stats.droppedMessages.Add(1)
	h.done(cl, pk.PacketID)
}

func (h *sessions) done(cl *mqtt.Client, pid uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.byID[cl.ID]
	if s == nil || s.msgs[pid] == nil {
		return
	}
	m := s.msgs[pid]
	h.unindex(s, m)
	if m.stored {
		h.commit.put(queuedKey(cl.ID, m.seq), nil)
	}
}

func (h *sessions) unindex(s *session, m *queuedMsg) {
	s.order.Remove(m.elem)
	h.all.Remove(m.all)
	delete(s.msgs, m.pid)
	s.bytes -= m.size
	h.total -= m.size + queuedOverhead
}

// OnPacketEncode takes over an inherited session's messages (takeOver), holds back a PUBLISH to
// a reconnected session until its earlier messages are resent, and a PUBLISH to a persistent session until it is stored. Shutting down, a message
// not yet stored is withheld (the client gets it after the restart) by making its encoding
// fail. It runs before WritePacket takes the client's lock.
func (h *sessions) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack {
		if pk.SessionPresent {
			h.takeOver(cl)
		}
		if cl.Net.Conn != nil {
			h.gates.release(cl.Net.Conn) // mochi has listed cl as the ID's client
		}
		return pk
	}
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return pk
	}
	if v, ok := h.replays.Load(cl); ok {
		r := v.(*replay)
		switch {
		case !r.started.Load() && pk.FixedHeader.Dup:
			// mochi's own resend (server.go:468): the replay sends these messages in order, and
			// ones queued after takeOver are in the client's outbound queue as well. Writing a
			// PINGRESP instead keeps them from going out twice and out of order; an error here
			// would end the connection.
			return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}
		case !pk.FixedHeader.Dup: // a newer message from the write loop, maybe before the CONNACK
			select {
			case <-r.done:
			case <-h.ctx.Done():
			}
		}
	}
	h.mu.Lock()
	var batch uint64
	if s := h.byID[cl.ID]; s != nil && s.msgs[pk.PacketID] != nil {
		batch = s.msgs[pk.PacketID].batch
	}
	h.mu.Unlock()
	if batch != 0 && !h.commit.wait(h.ctx, batch) {
		pk.FixedHeader.Type = packets.Reserved // not written: see above
	}
	return pk
}

// OnRetainMessage stores (r == 1) or deletes (r == -1) a retained message.
func (h *sessions) OnRetainMessage(_ *mqtt.Client, pk packets.Packet, r int64) {
	switch r {
	case 1:
		h.putJSON(prefixRetain+pk.TopicName, messageRecord("", pk))
	case -1:
		h.commit.put(prefixRetain+pk.TopicName, nil)
	}
}

// OnRetainedExpired deletes an expired retained message.
func (h *sessions) OnRetainedExpired(topic string) { h.commit.put(prefixRetain+topic, nil) }

// sessionFor returns id's index, creating it. h.mu is held.
func (h *sessions) sessionFor(id string) *session {
	s := h.byID[id]
	if s == nil {
		s = &session{subs: make(map[string]struct{}), msgs: make(map[uint16]*queuedMsg), order: list.New()}
		h.byID[id] = s
	}
	return s
}

// forget deletes everything stored for a client ID.
func (h *sessions) forget(id string) {
	h.mu.Lock()
	s := h.byID[id]
	delete(h.byID, id)
	if s != nil {
		for e := s.order.Front(); e != nil; e = e.Next() {
			m := e.Value.(*queuedMsg)
			h.all.Remove(m.all)
			h.total -= m.size + queuedOverhead
		}
	}
	h.mu.Unlock()
	if s == nil || !s.stored {
		return
	}
	h.commit.put(prefixClient+id, nil)
	for f := range s.subs {
		h.commit.put(subKey(id, f), nil)
	}
	for e := s.order.Front(); e != nil; e = e.Next() {
		h.commit.put(queuedKey(id, e.Value.(*queuedMsg).seq), nil)
	}
}

func (h *sessions) putClient(cl *mqtt.Client, disconnected int64) {
	if !persistent(cl) || cl.Net.Inline {
		return
	}
	p := cl.Properties
	h.putJSON(prefixClient+cl.ID, clientRecord{Client: storage.Client{
		ID: cl.ID, Listener: cl.Net.Listener, Username: p.Username, Clean: p.Clean, ProtocolVersion: p.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: p.Props.SessionExpiryInterval, SessionExpiryIntervalFlag: p.Props.SessionExpiryIntervalFlag,
			ReceiveMaximum: p.Props.ReceiveMaximum, MaximumPacketSize: p.Props.MaximumPacketSize,
			RequestProblemInfo: p.Props.RequestProblemInfo, RequestProblemInfoFlag: p.Props.RequestProblemInfoFlag,
			RequestResponseInfo: p.Props.RequestResponseInfo, User: p.Props.User,
		},
		Will: storage.ClientWill(p.Will),
	}, Disconnected: disconnected})
}

// putJSON stores v under key and returns its batch.
func (h *sessions) putJSON(key string, v any) uint64 {
	b, err := json.Marshal(v)
	if err != nil { // only for unencodable types, which these records are not
		h.log.Error("encoding session record", "key", key, "err", err)
		return 0
	}
	return h.commit.put(key, b)
}

func subKey(id, filter string) string { return prefixSub + id + "\x00" + filter }

func queuedKey(id string, seq uint64) string {
	return fmt.Sprintf("%s%s\x00%016x", prefixQueued, id, seq)
}

// parseQueuedKey splits a q/ key into client ID and sequence number.
func parseQueuedKey(key string) (string, uint64, error) {
	id, hex, ok := strings.Cut(strings.TrimPrefix(key, prefixQueued), "\x00")
	if !ok {
		return "", 0, fmt.Errorf("queued message key %q: no sequence number", key)
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return "", 0, fmt.Errorf("queued message key %q: %w", key, err)
	}
	return id, seq, nil
}

func messageRecord(client string, pk packets.Packet) storage.Message {
	props := pk.Properties.Copy(false)
	return storage.Message{
		Client: client, Origin: pk.Origin, PacketID: pk.PacketID, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: pk.Payload, Created: pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat: props.PayloadFormat, PayloadFormatFlag: props.PayloadFormatFlag,
			MessageExpiryInterval: props.MessageExpiryInterval, ContentType: props.ContentType,
			ResponseTopic: props.ResponseTopic, CorrelationData: props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier, User: props.User,
		},
	}
}
