package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/streamr"
)

var cutSeconds = flag.Float64("cut-seconds", 3, "how long TestFaultLinkCut keeps the overlay link down")

// faultPair is a publishing bridge A and a subscribing and storing bridge
// B whose overlay connections both run through cuttable proxies.
type faultPair struct {
	a, b           *instance
	proxyA, proxyB *linkProxy
	addrA, stream  string
}

// faultOverlay is an [overlay] table on a loopback TCP port picked at bind
// time that announces the proxy port announce (if not 0), with fast
// redial and gap fill.
func faultOverlay(announce int, bootstrap string) string {
	boot := "[]"
	if bootstrap != "" {
		boot = fmt.Sprintf("[%q]", bootstrap)
	}
	announced := ""
	if announce != 0 {
		announced = fmt.Sprintf("announce = [\"/ip4/127.0.0.1/tcp/%d\"]\n", announce)
	}
	return fmt.Sprintf(`[overlay]
listen = ["/ip4/127.0.0.1/tcp/0"]
%sbootstrap = %s
mdns = false
nat = false
dht = false
retry = "100ms"
redial_interval = "300ms"
gap_fill_timeout = "1s"
resend_retry = "1s"
`, announced, boot)
}

func startFaultPair(t *testing.T) *faultPair {
	t.Helper()
	p := &faultPair{proxyA: newLinkProxy(t), proxyB: newLinkProxy(t)}
	p.a = newInstance(t, faultOverlay(p.proxyA.port(), ""))
	p.a.start()
	p.proxyA.setTarget("127.0.0.1:" + p.a.overlayTCP)
	p.addrA = p.a.address()
	p.stream = p.addrA + "/fault/data"
	bootstrap := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", p.proxyA.port(), p.a.peerID())
	p.b = newInstance(t, faultOverlay(p.proxyB.port(), bootstrap)+fmt.Sprintf(`
[[subscribe]]
stream = %q
topic = "got/{publisher}"
metadata = true

[[store]]
stream = %q
`, p.stream, p.stream))
	p.b.start()
	p.proxyB.setTarget("127.0.0.1:" + p.b.overlayTCP)
	return p
}

func (p *faultPair) setCut(cut bool) {
	p.proxyA.setCut(cut)
	p.proxyB.setCut(cut)
}

// publisher sends {"n":…} readings at a fixed rate and records which were
// acknowledged.
type publisher struct {
	mu    sync.Mutex
	acked []int
	next  int
	stop  chan struct{}
	done  sync.WaitGroup
}

func startPublisher(t *testing.T, addr string, rate int, from int) *publisher {
	p := &publisher{stop: make(chan struct{}), next: from}
	client := connect(t, addr, "sensor")
	p.done.Go(func() {
		defer client.Disconnect(0)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			n := p.next
			tok := client.Publish("fault/data", 1, false, fmt.Sprintf(`{"n":%d}`, n))
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				return // the bridge went away
			}
			p.mu.Lock()
			p.acked = append(p.acked, n)
			p.next++
			p.mu.Unlock()
		}
	})
	return p
}

func (p *publisher) finish() []int {
	close(p.stop)
	p.done.Wait()
	return p.acked
}

// consumer records what B delivers on its local MQTT.
type consumer struct {
	mu   sync.Mutex
	refs map[string]bool // message IDs seen, for duplicates
	ns   []int           // readings in delivery order, duplicates removed
	dups int
}

type delivery struct {
	Content  struct{ N int }
	Metadata struct {
		PublisherID    string `json:"publisherId"`
		MsgChainID     string `json:"msgChainId"`
		Timestamp      int64
		SequenceNumber int32 `json:"sequenceNumber"`
	}
}

func newConsumer() *consumer { return &consumer{refs: make(map[string]bool)} }

func (c *consumer) attach(t *testing.T, in *instance, id string) mqtt.Client {
	t.Helper()
	client := connect(t, in.mqtt, id)
	tok := client.Subscribe("got/#", 1, func(_ mqtt.Client, m mqtt.Message) { c.record(t, m.Payload()) })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return client
}

// record takes one delivery, dropping a duplicate by its message ID (the metadata).
func (c *consumer) record(t *testing.T, payload []byte) {
	var d delivery
	if err := json.Unmarshal(payload, &d); err != nil {
		t.Errorf("delivery %s: %v", payload, err)
		return
	}
	key := fmt.Sprintf("%s/%s/%d/%d", d.Metadata.PublisherID, d.Metadata.MsgChainID, d.Metadata.Timestamp, d.Metadata.SequenceNumber)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refs[key] {
		c.dups++
		return
	}
	c.refs[key] = true
	c.ns = append(c.ns, d.Content.N)
}

func (c *consumer) snapshot() ([]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.ns...), c.dups
}

// waitComplete waits until the consumer holds every acknowledged reading.
func (c *consumer) waitComplete(t *testing.T, acked []int) []int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, _ := c.snapshot()
		if len(got) >= len(acked) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkInOrder fails unless got is exactly acked, in order.
func checkInOrder(t *testing.T, what string, got, acked []int) {
	t.Helper()
	if len(got) != len(acked) {
		t.Errorf("%s: %d readings, %d acknowledged", what, len(got), len(acked))
	}
	for i := range min(len(got), len(acked)) {
		if got[i] != acked[i] {
			t.Errorf("%s: position %d holds reading %d, want %d (out of order, missing or extra)", what, i, got[i], acked[i])
			return
		}
	}
}

// checkStored checks B's store (the storage node role) through `bridge
// export`: every acknowledged reading exactly once, in chain order.
func (p *faultPair) checkStored(t *testing.T, acked []int) {
	t.Helper()
	msgs := waitForExport(t, p.b, p.stream, len(acked))
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].ID.Ref().Compare(msgs[j].ID.Ref()) < 0 })
	got := make([]int, 0, len(msgs))
	for _, m := range msgs {
		if err := streamr.Validate(m, 0, streamr.Limits{}); err != nil {
			t.Errorf("stored message: %v", err)
		}
		var body struct{ N int }
		if err := json.Unmarshal(m.Content().Content, &body); err != nil {
			t.Fatal(err)
		}
		got = append(got, body.N)
	}
	checkInOrder(t, "B's store", got, acked)
}

// (1) The overlay link is cut while a sensor publishes at 100 msg/s; once
// it is back every reading arrives exactly once, in order, the backlog
// ahead of newer readings.
func TestFaultLinkCut(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test with real bridges")
	}
	p := startFaultPair(t)
	defer p.a.stop()
	defer p.b.stop()
	c := newConsumer()
	defer c.attach(t, p.b, "consumer").Disconnect(0)
	pub := startPublisher(t, p.a.mqtt, 100, 0)
	time.Sleep(time.Second)
	p.setCut(true)
	time.Sleep(time.Duration(*cutSeconds * float64(time.Second)))
	p.setCut(false)
	time.Sleep(time.Second)
	acked := pub.finish()
	got := c.waitComplete(t, acked)
	checkInOrder(t, "B's MQTT subscriber", got, acked)
	if _, dups := c.snapshot(); dups > 0 {
		t.Errorf("%d duplicate deliveries without any crash", dups)
	}
	p.checkStored(t, acked)
	t.Logf("%d readings, link down %.1fs", len(acked), *cutSeconds)
}

// (2) The subscribing bridge is killed with SIGKILL mid-stream and
// restarted: nothing is missing afterwards and all is in order. Its local
// MQTT delivery is at least once across the crash (positions are saved
// every 100 ms), with each duplicate identifiable by its message ID; its
// store holds every reading exactly once.
func TestFaultKillSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test with real bridges")
	}
	p := startFaultPair(t)
	defer p.a.stop()
	c := newConsumer()
	first := c.attach(t, p.b, "consumer")
	pub := startPublisher(t, p.a.mqtt, 100, 0)
	time.Sleep(time.Second)
	p.b.kill()
	first.Disconnect(0)
	time.Sleep(time.Second)
	p.b.start()
	defer p.b.stop()
	defer c.attach(t, p.b, "consumer").Disconnect(0)
	time.Sleep(time.Second)
	acked := pub.finish()
	got := c.waitComplete(t, acked)
	checkInOrder(t, "B's MQTT subscriber", got, acked)
	if _, dups := c.snapshot(); dups > 20 {
		t.Errorf("%d duplicates: more than 100 ms of readings re-delivered", dups)
	}
	p.checkStored(t, acked)
}

// (3) The publishing bridge is killed with SIGKILL while it replays its
// backlog after an outage, and restarted: B still ends with every
// reading exactly once, in order.
func TestFaultKillPublisherMidBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test with real bridges")
	}
	p := startFaultPair(t)
	defer p.b.stop()
	c := newConsumer()
	defer c.attach(t, p.b, "consumer").Disconnect(0)
	p.setCut(true)
	pub := startPublisher(t, p.a.mqtt, 200, 0)
	time.Sleep(2 * time.Second) // a backlog of ~400 readings
	acked := pub.finish()
	p.setCut(false)
	time.Sleep(300 * time.Millisecond) // replay under way
	p.a.kill()
	p.a.start()
	defer p.a.stop()
	pub = startPublisher(t, p.a.mqtt, 100, len(acked))
	time.Sleep(time.Second)
	acked = append(acked, pub.finish()...)
	got := c.waitComplete(t, acked)
	checkInOrder(t, "B's MQTT subscriber", got, acked)
	p.checkStored(t, acked)
}
