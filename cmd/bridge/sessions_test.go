package main

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Persistent MQTT sessions at the receiving gateway B (issue #12): every reading acknowledged at
// A reaches a persistent QoS 1 consumer on B, in order, across B's restarts and kill -9 and the
// consumer's absence. Each test runs the consumer over MQTT 3.1.1 and MQTT 5.

// session is a persistent-session QoS 1 consumer of B's "got/#" (clean session 0 or MQTT 5
// session expiry 1h), recording into a consumer.
type session struct {
	c       *consumer
	id      string
	version int
}

// attach connects the session (first: starting it afresh), subscribes and fails on any SUBACK
// error. It returns the disconnect.
func (s *session) attach(t *testing.T, in *instance, first bool) func() {
	t.Helper()
	if s.version == 4 {
		return s.attachV3(t, in, first)
	}
	conn, err := net.Dial("tcp", in.mqtt)
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{
		ClientID: s.id, Conn: conn, PacketTimeout: 10 * time.Second,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { s.c.record(t, pr.Packet.Payload); return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	expiry := uint32(3600)
	ca, err := cl.Connect(ctx, &paho.Connect{ClientID: s.id, KeepAlive: 30, CleanStart: first,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatalf("v5 connect %s: %v", s.id, err)
	}
	if !first && !ca.SessionPresent {
		t.Errorf("v5 reconnect of %s: session not present", s.id)
	}
	sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "got/#", QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("v5 SUBACK %+v, %v: want granted QoS 1", sa, err)
	}
	return func() {
		_ = cl.Disconnect(&paho.Disconnect{})
		<-cl.Done()
	}
}

func (s *session) attachV3(t *testing.T, in *instance, first bool) func() {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + in.mqtt).SetClientID(s.id).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetConnectTimeout(10 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { s.c.record(t, m.Payload()) })
	if first { // drop any earlier session of the ID, then open the persistent one
		connect(t, in.mqtt, s.id).Disconnect(100)
	}
	cl := mqtt.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect %s: %v", s.id, tok.Error())
	}
	if ct := tok.(*mqtt.ConnectToken); !first && !ct.SessionPresent() {
		t.Errorf("v3 reconnect of %s: session not present", s.id)
	}
	st := cl.Subscribe("got/#", 1, nil)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("v3 subscribe: %v", st.Error())
	}
	if code := st.(*mqtt.SubscribeToken).Result()["got/#"]; code != 1 {
		t.Fatalf("v3 SUBACK %#x, want granted QoS 1", code)
	}
	return func() { cl.Disconnect(100) }
}

func forVersions(t *testing.T, f func(t *testing.T, version int)) {
	if testing.Short() {
		t.Skip("fault test with real bridges")
	}
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("mqtt%d", v), func(t *testing.T) { f(t, v) })
	}
}

// checkDelivered checks presence and order, and allows dups duplicates (each dropped by its
// message ID) where MQTT allows no better.
func checkDelivered(t *testing.T, c *consumer, acked []int, dups int) {
	t.Helper()
	got := c.waitComplete(t, acked)
	checkInOrder(t, "B's persistent consumer", got, acked)
	if _, n := c.snapshot(); n > dups {
		t.Errorf("%d duplicate deliveries, want at most %d", n, dups)
	}
}

// B is killed with SIGKILL while readings flow to a connected persistent consumer, and
// restarted; the consumer reconnects and gets everything, in order. Readings it acknowledged
// just before the kill may come again (B had not yet stored the acknowledgement: QoS 1 is at
// least once), never more than a handful.
func TestSessionKillReceiver(t *testing.T) {
	forVersions(t, func(t *testing.T, version int) {
		p := startFaultPair(t)
		defer p.a.stop()
		s := &session{c: newConsumer(), id: "app", version: version}
		closeFirst := s.attach(t, p.b, true)
		pub := startPublisher(t, p.a.mqtt, 100, 0)
		time.Sleep(1500 * time.Millisecond)
		p.b.kill()
		closeFirst()
		time.Sleep(500 * time.Millisecond)
		p.b.start()
		defer p.b.stop()
		defer s.attach(t, p.b, false)()
		time.Sleep(time.Second)
		checkDelivered(t, s.c, pub.finish(), 10)
	})
}

// The consumer is away (session kept) while 1,000 readings flow; on reconnect it gets all of
// them in order, exactly once.
func TestSessionConsumerOffline(t *testing.T) {
	forVersions(t, func(t *testing.T, version int) {
		p := startFaultPair(t)
		defer p.a.stop()
		defer p.b.stop()
		s := &session{c: newConsumer(), id: "app", version: version}
		s.attach(t, p.b, true)()
		pub := startPublisher(t, p.a.mqtt, 500, 0)
		for {
			pub.mu.Lock()
			n := len(pub.acked)
			pub.mu.Unlock()
			if n >= 1000 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		acked := pub.finish()
		waitMetric(t, p.b, `tributary_order_delivered_total{orderer="mqtt"}`, float64(len(acked)), time.Minute)
		defer s.attach(t, p.b, false)()
		checkDelivered(t, s.c, acked, 0)
	})
}

// Readings reach B while the consumer's session exists but the consumer is not connected (it
// subscribed before they were published, then went away); B is restarted, gracefully or with
// SIGKILL; the consumer reconnects and resubscribes: no SUBACK error, everything in order,
// exactly once.
func TestSessionQueuedAcrossRestart(t *testing.T) {
	for _, restart := range []string{"graceful", "kill"} {
		t.Run(restart, func(t *testing.T) {
			forVersions(t, func(t *testing.T, version int) {
				p := startFaultPair(t)
				defer p.a.stop()
				s := &session{c: newConsumer(), id: "app", version: version}
				s.attach(t, p.b, true)()
				pub := startPublisher(t, p.a.mqtt, 200, 0)
				time.Sleep(1500 * time.Millisecond)
				acked := pub.finish()
				waitMetric(t, p.b, `tributary_order_delivered_total{orderer="mqtt"}`, float64(len(acked)), time.Minute)
				if restart == "kill" {
					p.b.kill()
				} else {
					p.b.stop()
				}
				p.b.start()
				defer p.b.stop()
				if restart == "kill" {
					// More readings once B is back on the overlay: they queue behind the stored
					// ones. (After a graceful restart gossipsub's prune backoff keeps B out of
					// A's mesh for about a minute: an overlay matter, left out here.)
					time.Sleep(time.Second)
					pub = startPublisher(t, p.a.mqtt, 200, len(acked))
					time.Sleep(time.Second)
					acked = append(acked, pub.finish()...)
				}
				waitMetric(t, p.b, `tributary_broker_session_queued_messages`, float64(len(acked)), time.Minute)
				defer s.attach(t, p.b, false)()
				checkDelivered(t, s.c, acked, 0)
			})
		})
	}
}

// The session limit: a consumer away while more readings arrive than its session may hold
// gets the newest session_max_messages of them, in order; the dropped ones are counted.
func TestSessionLimitDropsOldest(t *testing.T) {
	forVersions(t, func(t *testing.T, version int) {
		a := newInstance(t, faultOverlay(0, ""))
		a.start()
		defer a.stop()
		stream := a.address() + "/fault/data"
		b := newInstance(t, faultOverlay(0, a.bootstrapAddr("tcp"))+fmt.Sprintf(`
[mqtt]
session_max_messages = 100

[[subscribe]]
stream = %q
topic = "got/{publisher}"
metadata = true
`, stream))
		b.start()
		defer b.stop()
		s := &session{c: newConsumer(), id: "app", version: version}
		s.attach(t, b, true)()
		pub := startPublisher(t, a.mqtt, 200, 0)
		time.Sleep(1500 * time.Millisecond)
		acked := pub.finish()
		waitMetric(t, b, `tributary_order_delivered_total{orderer="mqtt"}`, float64(len(acked)), time.Minute)
		waitMetric(t, b, `tributary_broker_session_dropped_total{limit="messages"}`, float64(len(acked)-100), 10*time.Second)
		defer s.attach(t, b, false)()
		checkDelivered(t, s.c, acked[len(acked)-100:], 0)
		if got, _ := s.c.snapshot(); len(got) != 100 {
			t.Errorf("consumer got %d readings, want the newest 100", len(got))
		}
	})
}
