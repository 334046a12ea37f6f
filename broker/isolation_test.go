package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

const isolationUsers = `
[[user]]
name = "alice"
password_hash = "HASH(alice)"
publish = ["sensors/alice/#"]
subscribe = ["alerts/alice/#"]
[[user]]
name = "bob"
password_hash = "HASH(bob)"
publish = ["sensors/bob/#"]
subscribe = ["alerts/bob/#"]
[[user]]
name = "ops"
password_hash = "HASH(ops)"
publish = ["alerts/#", "sensors/#"]
subscribe = ["#"]
`

func startIsolationBroker(t *testing.T, h Handler) running {
	t.Helper()
	path := writeUsersFile(t, isolationUsers, map[string]string{"alice": "a-pw", "bob": "b-pw", "ops": "o-pw"})
	return startBroker(t, Config{UsersFile: path}, h)
}

// rawSession connects a raw client with clean=false (MQTT 5: a 300 s session) and returns it
// with the CONNACK's reason code and session-present flag.
func rawSession(t *testing.T, addr string, version byte, id, user, pass string) (*rawConn, byte, bool) {
	t.Helper()
	rc := dialRaw(t, addr, version)
	pk := rc.connectPacket(id, user, pass)
	pk.Connect.Clean = false
	if version == 5 {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 300, true
	}
	rc.send(pk)
	ack, err := rc.read(4 * waitTimeout)
	if err != nil || ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("%s: no CONNACK: %v", id, err)
	}
	return rc, ack.ReasonCode, ack.SessionPresent
}

func (rc *rawConn) subscribe(filter string, qos byte) byte {
	rc.t.Helper()
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}})
	for {
		pk, err := rc.read(waitTimeout)
		if err != nil {
			rc.t.Fatalf("no SUBACK for %s: %v", filter, err)
		}
		if pk.FixedHeader.Type == packets.Suback {
			return pk.ReasonCodes[0]
		}
	}
}

func (rc *rawConn) disconnect() {
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	_ = rc.conn.Close()
}

// nextPublish returns the next PUBLISH within d (acking QoS 1), or ok=false.
func (rc *rawConn) nextPublish(d time.Duration) (packets.Packet, bool) {
	rc.t.Helper()
	for {
		pk, err := rc.read(d)
		if err != nil {
			return pk, false
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		if pk.FixedHeader.Qos == 1 {
			rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		return pk, true
	}
}

// TestSessionTakeoverAcrossUsers repeats the attack of issue #13: alice reuses bob's client ID
// with clean=false to get his session and queued alerts. She is refused (MQTT 3.1.1: 0x02,
// MQTT 5: 0x85), bob is neither kicked nor robbed, and the attempt is counted and logged.
func TestSessionTakeoverAcrossUsers(t *testing.T) {
	b := startIsolationBroker(t, &testHandler{durable: true})
	addr := b.tcpAddr()
	bob, code, _ := rawSession(t, addr, 4, "bob-phone", "bob", "b-pw")
	if code != 0 || bob.subscribe("alerts/bob/#", 1) != 1 {
		t.Fatal("bob cannot subscribe")
	}
	bob.disconnect()
	waitClients(t, b, 0)
	ops := mustDialV5(t, addr, "ops", "ops", "o-pw")
	for _, p := range []string{"door open", "window open"} {
		if _, err := ops.publish(t, pahoPublish("alerts/bob/door", 1, p)); err != nil {
			t.Fatal(err)
		}
	}

	for _, v := range []struct {
		version byte
		want    byte
	}{{4, 0x02}, {5, 0x85}} {
		alice, code, present := rawSession(t, addr, v.version, "bob-phone", "alice", "a-pw")
		if code != v.want || present {
			t.Errorf("MQTT %d: alice got CONNACK 0x%02x present=%v, want 0x%02x", v.version, code, present, v.want)
		}
		if pk, ok := alice.nextPublish(200 * time.Millisecond); ok {
			t.Errorf("alice received bob's %q", pk.Payload)
		}
	}

	bob, code, present := rawSession(t, addr, 4, "bob-phone", "bob", "b-pw")
	if code != 0 || !present {
		t.Fatalf("bob's CONNACK 0x%02x present=%v after the attack, want his session", code, present)
	}
	// mochi resends a session's queue sorted by the second it was queued in (inflight.go:85),
	// so the order within a second is not kept.
	got := map[string]bool{}
	for range 2 {
		pk, ok := bob.nextPublish(waitTimeout)
		if !ok {
			t.Fatalf("bob got only %v of his queued alerts", got)
		}
		got[string(pk.Payload)] = true
	}
	if !got["door open"] || !got["window open"] {
		t.Fatalf("bob got %v, want his two queued alerts", got)
	}
	// While bob is connected, alice's attempt must not kick him.
	rawSession(t, addr, 5, "bob-phone", "alice", "a-pw")
	if _, err := bob.read(200 * time.Millisecond); err != nil && !isTimeout(err) {
		t.Fatalf("bob's connection ended by alice's attempt: %v", err)
	}
	if n := b.Stats().Refused["session_takeover"]; n != 3 {
		t.Errorf("session_takeover counted %d times, want 3", n)
	}
	if n := strings.Count(b.logs.String(), "belongs to another user's session"); n != 1 {
		t.Errorf("takeover logged %d times, want once (rate-limited)", n)
	}
}

// TestWillOutsideACL repeats the forged-Will attack: alice sets a retained Will on bob's alert
// topic. Her CONNECT is refused (MQTT 5: 0x87, MQTT 3.1.1: 0x05); nothing reaches bob or is
// retained.
func TestWillOutsideACL(t *testing.T) {
	b := startIsolationBroker(t, &testHandler{durable: true})
	addr := b.tcpAddr()
	bob := dialRaw(t, addr, 5)
	if bob.connect(bob.connectPacket("bob-1", "bob", "b-pw")) != 0 || bob.subscribe("alerts/bob/#", 1) != 1 {
		t.Fatal("bob cannot subscribe")
	}
	for _, v := range []struct {
		version byte
		want    byte
	}{{5, 0x87}, {4, 0x05}} {
		alice := dialRaw(t, addr, v.version)
		pk := alice.connectPacket("alice-1", "alice", "a-pw")
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillRetain = true, "alerts/bob/door", []byte("forged"), true
		if code := alice.connect(pk); code != v.want {
			t.Errorf("MQTT %d: CONNACK 0x%02x, want 0x%02x", v.version, code, v.want)
		}
		_ = alice.conn.Close()
	}
	if pk, ok := bob.nextPublish(300 * time.Millisecond); ok {
		t.Fatalf("bob received forged will %q", pk.Payload)
	}
	late := dialRaw(t, addr, 5)
	late.connect(late.connectPacket("bob-2", "bob", "b-pw"))
	late.subscribe("alerts/bob/#", 1)
	if pk, ok := late.nextPublish(300 * time.Millisecond); ok {
		t.Fatalf("forged will retained: %q", pk.Payload)
	}
	if n := b.Stats().Refused["will_not_authorized"]; n != 2 {
		t.Errorf("will_not_authorized counted %d times, want 2", n)
	}
}

// TestWillThroughPipeline checks that a Will inside the ACL is handed to the Handler like any
// reading when it is published, and that a Will the Handler refuses is neither delivered nor
// retained.
func TestWillThroughPipeline(t *testing.T) {
	h := &testHandler{decide: func(m *Message) ReasonCode {
		if strings.HasSuffix(m.Topic, "/unmapped") {
			return TopicNameInvalid
		}
		return Success
	}}
	b := startIsolationBroker(t, h)
	addr := b.tcpAddr()
	ops := dialRaw(t, addr, 5)
	ops.connect(ops.connectPacket("ops-1", "ops", "o-pw"))
	ops.subscribe("sensors/alice/#", 1)
	for _, topic := range []string{"sensors/alice/unmapped", "sensors/alice/status"} {
		alice := dialRaw(t, addr, 5)
		pk := alice.connectPacket("alice-"+topic, "alice", "a-pw")
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillRetain, pk.Connect.WillQos = true, topic, []byte("offline"), true, 1
		if code := alice.connect(pk); code != 0 {
			t.Fatalf("CONNACK 0x%02x for a will inside the ACL", code)
		}
		_ = alice.conn.Close() // no DISCONNECT: the will is published
	}
	pk, ok := ops.nextPublish(waitTimeout)
	if !ok || pk.TopicName != "sensors/alice/status" {
		t.Fatalf("got %q on %q (%v), want only the accepted will", pk.Payload, pk.TopicName, ok)
	}
	if pk, ok := ops.nextPublish(300 * time.Millisecond); ok {
		t.Fatalf("refused will delivered on %s", pk.TopicName)
	}
	var handled []string
	for _, m := range h.messages() {
		handled = append(handled, m.Topic)
	}
	if len(handled) != 2 {
		t.Errorf("handler saw %v, want both wills", handled)
	}
	late := dialRaw(t, addr, 5)
	late.connect(late.connectPacket("ops-2", "ops", "o-pw"))
	late.subscribe("sensors/alice/#", 1)
	if pk, ok := late.nextPublish(waitTimeout); !ok || pk.TopicName != "sensors/alice/status" {
		t.Errorf("retained: %q on %q (%v), want the accepted will only", pk.Payload, pk.TopicName, ok)
	}
	if pk, ok := late.nextPublish(300 * time.Millisecond); ok {
		t.Errorf("refused will retained on %s", pk.TopicName)
	}
}

// TestSharedSubscriptionACL checks that "$share/<group>/" does not hide the filter from the
// subscribe ACL: alice may share-subscribe to her alerts, not to bob's.
func TestSharedSubscriptionACL(t *testing.T) {
	b := startIsolationBroker(t, &testHandler{durable: true})
	alice := dialRaw(t, b.tcpAddr(), 5)
	alice.connect(alice.connectPacket("alice-1", "alice", "a-pw"))
	for filter, want := range map[string]byte{
		"$share/g/alerts/alice/#": 1,
		"$share/g/alerts/bob/#":   0x87,
		"$share/g/#":              0x87,
	} {
		if code := alice.subscribe(filter, 1); code != want {
			t.Errorf("SUBACK for %s: 0x%02x, want 0x%02x", filter, code, want)
		}
	}
	ops := mustDialV5(t, b.tcpAddr(), "ops", "ops", "o-pw")
	if _, err := ops.publish(t, pahoPublish("alerts/alice/x", 1, "for alice")); err != nil {
		t.Fatal(err)
	}
	if pk, ok := alice.nextPublish(waitTimeout); !ok || string(pk.Payload) != "for alice" {
		t.Fatalf("shared subscriber got %q (%v)", pk.Payload, ok)
	}
}
