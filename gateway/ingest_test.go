package gateway

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/streamr"
)

// noOverlay keeps a test gateway to MQTT, storage and signing.
const noOverlay = "[overlay]\nenabled = false\n"

// rejected is the gateway's count of readings refused for reason.
func (g *testGateway) rejected(t *testing.T, reason string) float64 {
	t.Helper()
	families, err := g.system().reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasSuffix(f.GetName(), "_rejected_total") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitSigned waits until n signed messages of part are stored.
func (g *testGateway) waitSigned(t *testing.T, part streamr.StreamPartID, n int) []*streamr.StreamMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var msgs []*streamr.StreamMessage
		err := g.system().store.Messages(part, 0, math.MaxInt64, func(b []byte) error {
			m, err := streamr.Unmarshal(bytes.Clone(b))
			msgs = append(msgs, m)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages signed after 30s", len(msgs), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every rejection reaches an MQTT 5 client as its PUBACK reason code, and
// is counted by reason.
func TestRejectionReasonsMQTT5(t *testing.T) {
	g := newTestGateway(t, noOverlay+`
[[rule]]
topic = "ok/+"
stream = "{address}/ok/{1}"
[[rule]]
topic = "bad/+"
stream = "{address}/bad/{1}"
`)
	g.run(t)
	client := connect5(t, g.mqttAddr(t))
	tests := []struct {
		topic, payload string
		code           byte
		label          string
	}{
		{"ok/a", `{"v":1}`, 0x00, ""},
		{"nothing/a", `{"v":1}`, 0x90, "no_rule"},
		{"bad/a b", `{"v":1}`, 0x90, "invalid_stream_id"},
		{"ok/a", `[1]`, 0x99, "invalid_json"},
	}
	for _, tc := range tests {
		resp, err := client.Publish(t.Context(), &paho5.Publish{Topic: tc.topic, QoS: 1, Payload: []byte(tc.payload)})
		var code byte
		if err == nil {
			code = resp.ReasonCode
		} else if resp != nil {
			code = resp.ReasonCode
		}
		if code != tc.code {
			t.Errorf("%s %s: reason 0x%02x (err %v), want 0x%02x", tc.topic, tc.payload, code, err, tc.code)
		}
		if tc.label != "" && g.rejected(t, tc.label) < 1 {
			t.Errorf("%s not counted", tc.label)
		}
	}
}

// MQTT 3.1.1 has no negative PUBACK: a refused reading is dropped (not
// stored, not delivered to subscribers) and counted.
func TestRejectionMQTT311Dropped(t *testing.T) {
	g := newTestGateway(t, noOverlay+"[[rule]]\ntopic = \"ok/#\"\nstream = \"{address}/{topic}\"\n")
	g.run(t)
	sub := connect(t, g.mqttAddr(t), "watcher")
	got := make(chan string, 10)
	if tok := sub.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := connect(t, g.mqttAddr(t), "sensor")
	for _, topic := range []string{"nope/x", "ok/x"} {
		if tok := pub.Publish(topic, 1, false, `{"v":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	select {
	case topic := <-got:
		if topic != "ok/x" {
			t.Fatalf("subscriber received refused topic %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("accepted reading not delivered")
	}
	if v := g.rejected(t, "no_rule"); v != 1 {
		t.Fatalf("no_rule counted %v times, want 1", v)
	}
}

func connect5(t *testing.T, addr string) *paho5.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: "v5-client", Conn: conn, PacketTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: "v5-client", KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatalf("MQTT 5 connect: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho5.Disconnect{})
		<-c.Done()
	})
	return c
}

// At the storage quota an MQTT 5 publisher gets reason 0x97, QoS 0 is
// refused too, and every reading acknowledged before is kept and signed.
func TestQuotaExceeded(t *testing.T) {
	g := newTestGateway(t, noOverlay+"[storage]\nquota = \"2MiB\"\nmin_free = \"0 B\"\n")
	g.run(t)
	client := connect5(t, g.mqttAddr(t))
	filler := strings.Repeat("x", 1000)
	acked := 0
	var refused bool
	for i := 0; i < 10_000 && !refused; i++ {
		payload := fmt.Sprintf(`{"i":%d,"fill":%q}`, i, filler)
		resp, err := client.Publish(t.Context(), &paho5.Publish{Topic: "quota/data", QoS: 1, Payload: []byte(payload)})
		switch {
		case err == nil:
			acked++
		case resp != nil && resp.ReasonCode == 0x97:
			refused = true
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if !refused {
		t.Fatalf("no 0x97 after %d readings of 1 kB with a 2 MiB quota", acked)
	}
	if _, err := client.Publish(t.Context(), &paho5.Publish{Topic: "quota/data", QoS: 0, Payload: []byte(`{"qos":0}`)}); err != nil {
		t.Fatal(err)
	}
	address := g.Identity().Publisher
	part := streamr.StreamPartID{Stream: streamr.StreamID(address + "/quota/data")}
	msgs := g.waitSigned(t, part, acked)
	if len(msgs) != acked {
		t.Fatalf("%d messages stored, %d readings acknowledged", len(msgs), acked)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.rejected(t, "quota_exceeded") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the QoS 0 reading over quota was not refused and counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
