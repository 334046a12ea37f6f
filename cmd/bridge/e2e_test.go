package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

var peerIDLog = regexp.MustCompile(`msg="overlay listening" peer_id=(\S+)`)

// peerID reads the overlay peer ID a running bridge logged.
func (in *instance) peerID() string {
	in.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := peerIDLog.FindStringSubmatch(in.logs()); m != nil {
			return m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	in.t.Fatalf("no overlay peer ID in the logs:\n%s", in.logs())
	return ""
}

// overlayTable is an [overlay] table on loopback with the given transport
// ("tcp" or "quic") on a port picked at bind time, bootstrapping from
// bootstrap if not empty.
func overlayTable(transport string, bootstrap string) string {
	listen := "/ip4/127.0.0.1/tcp/0"
	if transport == "quic" {
		listen = "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	boot := "[]"
	if bootstrap != "" {
		boot = fmt.Sprintf("[%q]", bootstrap)
	}
	return fmt.Sprintf("[overlay]\nlisten = [%q]\nbootstrap = %s\nmdns = false\nnat = false\nretry = \"200ms\"\n", listen, boot)
}

// A reading published over MQTT on bridge A arrives on bridge B's local
// MQTT through the overlay, signed by A and verified by B.
func TestTwoBridgesOverlay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real bridges")
	}
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) { testTwoBridges(t, transport) })
	}
}

func testTwoBridges(t *testing.T, transport string) {
	a := newInstance(t, overlayTable(transport, ""))
	a.start()
	defer a.stop()
	addrA := a.address()
	bootstrap := a.bootstrapAddr("tcp")
	if transport == "quic" {
		bootstrap = a.bootstrapAddr("quic")
	}
	b := newInstance(t, overlayTable(transport, bootstrap)+fmt.Sprintf(`
[[subscribe]]
stream = "%s/e2e/data"
topic = "from-overlay/{publisher}"
metadata = true
`, addrA))
	b.start()
	defer b.stop()

	type envelope struct {
		Content  struct{ N int }
		Metadata struct {
			PublisherID string `json:"publisherId"`
			Timestamp   int64
		}
	}
	got := make(chan envelope, 100)
	sub := connect(t, b.mqtt, "consumer")
	defer sub.Disconnect(0)
	tok := sub.Subscribe("from-overlay/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		var e envelope
		if err := json.Unmarshal(m.Payload(), &e); err != nil {
			t.Errorf("payload %s: %v", m.Payload(), err)
		}
		got <- e
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := connect(t, a.mqtt, "sensor")
	defer pub.Disconnect(0)
	const n = 20
	for i := range n {
		if tok := pub.Publish("e2e/data", 1, false, fmt.Sprintf(`{"n":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// Every reading exactly once, in publish order.
	deadline := time.After(30 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case e := <-got:
			if e.Metadata.PublisherID != addrA {
				t.Fatalf("message from %q, want bridge A %s", e.Metadata.PublisherID, addrA)
			}
			if e.Content.N != i {
				t.Fatalf("delivery %d is reading %d: out of order or duplicated", i, e.Content.N)
			}
		case <-deadline:
			t.Fatalf("bridge B delivered %d of %d readings\nB:\n%s", i, n, b.logs())
		}
	}
	select {
	case e := <-got:
		t.Fatalf("extra delivery of reading %d", e.Content.N)
	case <-time.After(300 * time.Millisecond):
	}
}
