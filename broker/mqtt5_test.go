package broker

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// waitClients waits until n network clients are connected.
func waitClients(t testing.TB, b running, n int64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for b.Stats().ClientsConnected != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients connected, want %d", b.Stats().ClientsConnected, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMessageExpiryQoS1 checks MQTT 5 message expiry (MQTT-3.3.2-5) for QoS 1 readings, both
// through the ackQueue (durability pending) and through mochi's own path (durable at once): an
// expired message is neither delivered to a returning persistent session nor served as
// retained, and one still alive arrives with its remaining lifetime.
func TestMessageExpiryQoS1(t *testing.T) {
	for _, tc := range []struct {
		name    string
		durable bool
	}{{"awaiting durability", false}, {"durable at once", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, Config{}, &testHandler{durable: tc.durable})
			sub := dialV5Session(t, b.tcpAddr(), "sub", "", "")
			if _, err := sub.subscribe(t, "exp/#", 1); err != nil {
				t.Fatal(err)
			}
			sub.leave(t)
			pub := mustDialV5(t, b.tcpAddr(), "pub", "", "")
			waitClients(t, b, 1)
			short, long := uint32(1), uint32(120)
			for _, p := range []*paho.Publish{
				{Topic: "exp/short", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: &short}},
				{Topic: "exp/long", QoS: 1, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: &long}},
				{Topic: "ret/short", QoS: 1, Retain: true, Payload: []byte("gone"), Properties: &paho.PublishProperties{MessageExpiry: &short}},
			} {
				if _, err := pub.publish(t, p); err != nil {
					t.Fatalf("publish %s: %v", p.Topic, err)
				}
			}
			// mochi stores expiry in whole seconds and sweeps once a second: after 3 s a
			// 1-second message is expired on every count.
			time.Sleep(3 * time.Second)

			back := dialV5Session(t, b.tcpAddr(), "sub", "", "")
			m := expectV5(t, back.received, "long")
			if m.Properties == nil || m.Properties.MessageExpiry == nil || *m.Properties.MessageExpiry > long-2 {
				t.Errorf("queued message delivered with expiry %v, want at most %d s left", m.Properties, long-2)
			}
			select {
			case m := <-back.received:
				t.Errorf("expired message %q on %s delivered to the returning session", m.Payload, m.Topic)
			case <-time.After(300 * time.Millisecond):
			}
			if _, err := back.subscribe(t, "ret/#", 1); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-back.received:
				t.Errorf("expired retained message %q served", m.Payload)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

// TestAckCarriesNoPublishProperties checks that no ack of an MQTT 5 PUBLISH echoes its user
// properties (mochi's default; Paho's clients cannot parse such a PUBREC), whichever path
// writes the ack.
func TestAckCarriesNoPublishProperties(t *testing.T) {
	for _, tc := range []struct {
		name    string
		qos     byte
		durable bool
	}{
		{"qos1 via ack queue", 1, false},
		{"qos1 via mochi", 1, true},
		{"qos2", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, Config{}, &testHandler{durable: tc.durable})
			rc := dialRaw(t, b.tcpAddr(), 5)
			if code := rc.connect(rc.connectPacket("pub", "", "")); code != 0 {
				t.Fatalf("CONNACK 0x%02x", code)
			}
			rc.send(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: tc.qos},
				TopicName:   "t/1", PacketID: 7, Payload: []byte("x"),
				Properties: packets.Properties{User: []packets.UserProperty{{Key: "sensor", Val: "kitchen"}}},
			})
			ack, err := rc.read(waitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[byte]byte{1: packets.Puback, 2: packets.Pubrec}[tc.qos]; ack.FixedHeader.Type != want || ack.PacketID != 7 {
				t.Fatalf("got type %d id %d, want type %d id 7", ack.FixedHeader.Type, ack.PacketID, want)
			}
			if len(ack.Properties.User) > 0 {
				t.Errorf("ack echoes the publish's user properties: %v", ack.Properties.User)
			}
		})
	}
}

func TestRateLog(t *testing.T) {
	logs := &logBuffer{}
	r := newRateLog(slog.New(slog.NewTextHandler(logs, nil)), time.Minute)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 5 {
		r.Warn("k", "refused", "n", 1)
	}
	r.Warn("other", "other kind")
	now = now.Add(time.Minute)
	r.Warn("k", "refused", "n", 2)
	got := logs.String()
	if c := strings.Count(got, "msg=refused"); c != 2 {
		t.Errorf("%d lines of kind k, want 2:\n%s", c, got)
	}
	if !strings.Contains(got, "n=2 suppressed=4") || !strings.Contains(got, "other kind") {
		t.Errorf("want the second line to carry suppressed=4, and the other kind logged:\n%s", got)
	}
}

// TestRefusedPublishLoggedOnce hammers the broker with refused readings: one log line for the
// burst, each counted, none carrying the payload.
func TestRefusedPublishLoggedOnce(t *testing.T) {
	b := startBroker(t, Config{}, &testHandler{decide: func(*Message) ReasonCode { return TopicNameInvalid }, durable: true})
	c := dialV3(t, "tcp://"+b.tcpAddr(), "pub", nil)
	for range 200 {
		publishV3(t, c, "t/1", 1, false, "secret-payload")
	}
	logs := b.logs.String()
	if n := strings.Count(logs, "publish rejected"); n != 1 {
		t.Errorf("%d log lines for 200 refusals, want 1", n)
	}
	if strings.Contains(logs, "secret-payload") {
		t.Error("log carries payload bytes")
	}
	if n := b.Stats().Rejected[TopicNameInvalid]; n != 200 {
		t.Errorf("counted %d refusals, want 200", n)
	}
}

func pahoPublish(topic string, qos byte, payload string) *paho.Publish {
	return &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)}
}
