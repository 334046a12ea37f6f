package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestDeepFiltersRefused repeats the attack of issue #13: one 256 KiB SUBSCRIBE with four
// 32,000-level filters (30 s to SUBACK before). The filters are refused (MQTT 5: 0x8F, MQTT
// 3.1.1: 0x80) before mochi's topic tree sees them; a filter within the limits in the same
// packet is granted, and deep or long PUBLISH topics are refused with 0x90.
func TestDeepFiltersRefused(t *testing.T) {
	b := startBroker(t, Config{}, &testHandler{durable: true})
	deep := strings.Repeat("a/", 32000) + "#"
	for _, v := range []struct {
		version byte
		refused byte
	}{{5, 0x8F}, {4, 0x80}} {
		rc := dialRaw(t, b.tcpAddr(), v.version)
		rc.connect(rc.connectPacket("attacker", "", ""))
		filters := packets.Subscriptions{{Filter: "ok/#", Qos: 1}}
		for range 4 {
			filters = append(filters, packets.Subscription{Filter: deep, Qos: 1})
		}
		// Short but deep: refused for its depth.
		filters = append(filters, packets.Subscription{Filter: strings.Repeat("+/", 40) + "#", Qos: 1})
		start := time.Now()
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: filters})
		ack, err := rc.read(4 * waitTimeout)
		took := time.Since(start)
		if err != nil || ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("MQTT %d: no SUBACK within %s: %v", v.version, 4*waitTimeout, err)
		}
		t.Logf("MQTT %d: SUBACK for four 32,000-level filters after %s", v.version, took)
		want := []byte{1, v.refused, v.refused, v.refused, v.refused, v.refused}
		if string(ack.ReasonCodes) != string(want) {
			t.Errorf("MQTT %d: SUBACK codes % x, want % x", v.version, ack.ReasonCodes, want)
		}
	}
	if r := b.Stats().Refused; r["topic_too_long"] != 8 || r["topic_too_deep"] != 2 {
		t.Errorf("refusals counted %v, want 8 topic_too_long and 2 topic_too_deep", r)
	}

	pub := mustDialV5(t, b.tcpAddr(), "pub", "", "")
	for _, topic := range []string{strings.Repeat("a/", 10000) + "b", strings.Repeat("a/", 40) + "b", strings.Repeat("x", DefaultMaxTopicLength+1)} {
		resp, err := pub.publish(t, pahoPublish(topic, 1, "x"))
		if err == nil && (resp == nil || resp.ReasonCode != 0x90) {
			t.Errorf("publish to a %d-byte topic: %+v, want reason 0x90", len(topic), resp)
		}
	}
	if c := strings.Count(b.logs.String(), `msg="subscribe refused"`); c != 2 {
		t.Errorf("refused filters logged %d times, want once per rule (2)", c)
	}
}

// TestConnackCodes checks the CONNACKs mochi gets wrong: MQTT 3.1.1 return codes per spec
// (empty client ID with clean=false: 0x02; unsupported protocol level: 0x01) and the MQTT 5
// Maximum Packet Size and Topic Alias Maximum.
func TestConnackCodes(t *testing.T) {
	b := startBroker(t, Config{MaxPacketSize: 64 << 10}, &testHandler{durable: true})
	rc := dialRaw(t, b.tcpAddr(), 4)
	pk := rc.connectPacket("", "", "")
	pk.Connect.Clean = false
	if code := rc.connect(pk); code != 0x02 {
		t.Errorf("3.1.1 empty client ID, clean=false: CONNACK 0x%02x, want 0x02", code)
	}
	for _, level := range []byte{3, 6} {
		rc := dialRaw(t, b.tcpAddr(), level)
		if code := rc.connect(rc.connectPacket("c", "", "")); code != 0x01 {
			t.Errorf("protocol level %d: CONNACK 0x%02x, want 0x01", level, code)
		}
	}
	rc = dialRaw(t, b.tcpAddr(), 5)
	rc.send(rc.connectPacket("c5", "", ""))
	ack, err := rc.read(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if ack.ReasonCode != 0 || ack.Properties.MaximumPacketSize != 64<<10 || ack.Properties.TopicAliasMaximum != topicAliasMaximum {
		t.Errorf("MQTT 5 CONNACK 0x%02x, maximum packet size %d, topic alias maximum %d; want 0, %d, %d",
			ack.ReasonCode, ack.Properties.MaximumPacketSize, ack.Properties.TopicAliasMaximum, 64<<10, topicAliasMaximum)
	}
}

// TestNoPacketDumpsInLogs repeats the log attack of issue #13: malformed 200 KB PUBLISHes that
// mochi logs whole ("error processing packet", pk=...). The log stays small, rate-limited, and
// carries no payload bytes.
func TestNoPacketDumpsInLogs(t *testing.T) {
	b := startBroker(t, Config{}, &testHandler{durable: true})
	payload := []byte(strings.Repeat("S", 200<<10))
	for range 20 {
		rc := dialRaw(t, b.tcpAddr(), 5)
		rc.connect(rc.connectPacket("noisy", "", ""))
		// A topic alias beyond the maximum is a protocol error mochi logs with the packet.
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1,
			TopicName: "t/1", Payload: payload,
			Properties: packets.Properties{TopicAlias: topicAliasMaximum + 1, TopicAliasFlag: true}})
		rc.expectClosed(waitTimeout)
	}
	logs := b.logs.String()
	t.Logf("log after 20 malformed 200 KB PUBLISHes: %d bytes", len(logs))
	if strings.Contains(logs, "SSSSSSSS") {
		t.Error("log carries payload bytes")
	}
	if len(logs) > 16<<10 {
		t.Errorf("log grew by %d bytes, want under 16 KiB", len(logs))
	}
}

// TestInvalidUTF8Topic sends PUBLISHes whose topic is not UTF-8 over raw TCP: an MQTT 5 client
// gets DISCONNECT 0x81 (Malformed Packet, MQTT 5 1.5.4 and 4.13.1) before the connection closes,
// an MQTT 3.1.1 client is disconnected (3.1.1 has no reason to give); each is counted, logged
// once, and nothing reaches the Handler. A valid PUBLISH sent a byte at a time first is
// accepted: the check follows packets across reads.
func TestInvalidUTF8Topic(t *testing.T) {
	h := &testHandler{durable: true}
	b := startBroker(t, Config{}, h)
	valid := []byte{0x30, 7, 0, 3, 't', '/', 'a', 0, 0} // QoS 0 "t/a", v5 empty properties, payload 0
	bad := []byte{0x30, 6, 0, 3, 't', '/', 0xff, 0}
	nul := []byte{0x30, 6, 0, 3, 't', '/', 0x00, 0}
	for i, tc := range []struct {
		version byte
		publish []byte
	}{{5, bad}, {5, nul}, {4, bad}} {
		rc := dialRaw(t, b.tcpAddr(), tc.version)
		rc.connect(rc.connectPacket(fmt.Sprintf("bad-%d", i), "", ""))
		first := valid
		if tc.version == 4 {
			first = append([]byte{0x30, 6}, valid[2:8]...)
		}
		for _, c := range first {
			rc.write([]byte{c})
		}
		rc.write(tc.publish)
		if tc.version == 5 {
			pk, err := rc.read(waitTimeout)
			if err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x81 {
				t.Fatalf("v5, topic % x: got %v (type %d, reason %#x), want DISCONNECT 0x81", tc.publish[4:7], err, pk.FixedHeader.Type, pk.ReasonCode)
			}
		}
		rc.expectClosed(waitTimeout)
	}
	waitClients(t, b, 0)
	if n := b.Stats().Refused["invalid_utf8"]; n != 3 {
		t.Errorf("invalid_utf8 counted %d, want 3", n)
	}
	if c := strings.Count(b.logs.String(), "not valid UTF-8"); c != 1 {
		t.Errorf("logged %d times, want once:\n%s", c, b.logs.String())
	}
	if n := len(h.messages()); n != 3 {
		t.Errorf("handler got %d messages, want the 3 valid ones", n)
	}
}
