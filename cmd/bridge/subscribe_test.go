package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// mqttLog records what a local MQTT subscriber receives, per topic.
type mqttLog struct {
	mu  sync.Mutex
	got map[string][]int // topic → reading numbers in arrival order
}

// subscribeAll subscribes to filter on in's broker and records {"n":…}
// payloads, plain or in a metadata envelope.
func subscribeAll(t *testing.T, in *instance, filter string) *mqttLog {
	t.Helper()
	l := &mqttLog{got: map[string][]int{}}
	c := connect(t, in.mqtt, "sub-"+strings.NewReplacer("/", "-", "#", "all", "+", "any").Replace(filter))
	t.Cleanup(func() { c.Disconnect(0) })
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		var body struct {
			N       *int
			Content struct{ N int }
		}
		if err := json.Unmarshal(m.Payload(), &body); err != nil {
			t.Errorf("payload %s: %v", m.Payload(), err)
			return
		}
		n := body.Content.N
		if body.N != nil {
			n = *body.N
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.got[m.Topic()] = append(l.got[m.Topic()], n)
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return l
}

func (l *mqttLog) topic(topic string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.got[topic]...)
}

func (l *mqttLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.got)
}

func (l *mqttLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, v := range l.got {
		n += len(v)
	}
	return n
}

// publishN publishes, as client "sensor", readings {"n":from}…{"n":from+n-1} at QoS 1 on in.
func publishN(t *testing.T, in *instance, topic string, n int, from ...int) {
	t.Helper()
	start := 0
	if len(from) > 0 {
		start = from[0]
	}
	// One client ID: the gateway keeps one message chain per publisher.
	c := connect(t, in.mqtt, "sensor")
	defer c.Disconnect(0)
	for i := start; i < start+n; i++ {
		if tok := c.Publish(topic, 1, false, fmt.Sprintf(`{"n":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
}

// waitDeliveries waits until l holds at least n readings in all.
func waitDeliveries(t *testing.T, l *mqttLog, n int, in *instance) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.total() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries within 30s: %v\n%s", l.total(), n, l, in.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two [[subscribe]] tables on one stream partition deliver every reading
// each, in order, and both go on from their saved positions after a
// restart of the subscribing gateway: no reading lost or repeated.
func TestDuplicateSubscriptions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real bridges")
	}
	a := newInstance(t, overlayTable("tcp", ""))
	a.start()
	defer a.stop()
	addrA := a.address()
	boot := a.bootstrapAddr("tcp")
	b := newInstance(t, overlayTable("tcp", boot)+fmt.Sprintf(`
[[subscribe]]
stream = "%[1]s/dup/data"
topic = "first"
[[subscribe]]
stream = "%[1]s/dup/data"
topic = "second"
metadata = true
[[subscribe]]
stream = "%[1]s/other"
topic = "other"
`, addrA))
	b.start()
	got := subscribeAll(t, b, "#")
	const n = 10
	publishN(t, a, "dup/data", n)
	waitDeliveries(t, got, 2*n, b)
	want := seq(0, n)
	for _, topic := range []string{"first", "second"} {
		if g := got.topic(topic); fmt.Sprint(g) != fmt.Sprint(want) {
			t.Errorf("topic %s got %v, want %v", topic, g, want)
		}
	}

	// Readings 10…14 wait in A's backlog while B is down; A stops too, so
	// that the backlog reaches B only once B's MQTT subscriber is back.
	b.stop()
	publishN(t, a, "dup/data", 5, n)
	a.stop()
	b.start()
	defer b.stop()
	got = subscribeAll(t, b, "#")
	a.start()
	publishN(t, a, "dup/data", 1, n+5)
	waitDeliveries(t, got, 2*6, b)
	want = seq(n, n+6)
	for _, topic := range []string{"first", "second"} {
		if g := got.topic(topic); fmt.Sprint(g) != fmt.Sprint(want) {
			t.Errorf("after restart, topic %s got %v, want %v", topic, g, want)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if total := got.total(); total != 12 {
		t.Errorf("%d deliveries after restart, want 12: %v", total, got)
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}
