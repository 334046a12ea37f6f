package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
)

// An app written for the Streamr node's MQTT plugin works unchanged with
// mqtt.streamr_node: the API key as password (the node's CONNACK codes),
// stream IDs as topics with the partition query, payloadMetadata; a topic
// that is no stream ID still goes through the rules.
func TestStreamrNodeMQTT(t *testing.T) {
	g := appGateway(t, "[mqtt]\nstreamr_node = true\npayload_metadata = true\n[api]\nkeys = [\""+testAPIKey+"\"]\npartitions = 8\n[websocket]\naddress = \"\"\n")
	addr := g.mqttAddr(t)
	dial := func(password string) (mqtt.Client, error) {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("node-app").SetProtocolVersion(4).SetAutoReconnect(false).SetUsername("ignored")
		if password != "" {
			o.SetPassword(password)
		}
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return nil, errors.New("connect timed out")
		}
		return c, tok.Error()
	}
	if _, err := dial(""); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("no password: %v, want CONNACK 5", err)
	}
	if _, err := dial("wrong"); !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
		t.Errorf("wrong password: %v, want CONNACK 4", err)
	}
	c, err := dial(testAPIKey)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(0)
	stream := "0x" + strings.Repeat("12", 20) + "/node/compat"
	pub := func(topic, payload string) {
		t.Helper()
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	pub(stream+"?partition=3", `{"content":{"v":1},"metadata":{"timestamp":1700000000123}}`)
	pub(stream+"?partitionKeyField=room", `{"content":{"v":2,"room":"hall"}}`)
	pub("home/temp", `{"content":{"v":3}}`) // the default rule: 0x<gateway>/home/temp

	base := "http://" + g.HTTPAddr().String()
	// last polls until the partition has a message: a PUBACK means stored,
	// not signed, and resends serve signed messages only. A key slower than
	// sign_in_commit_under, which any key is under load, signs after the
	// commit (with sign_in_commit_under = "0s" this failed 2 runs in 20).
	last := func(stream string, partition int) []bridge.MessageObject {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := curl(t, "-H", "Authorization: Bearer "+testAPIKey,
				fmt.Sprintf("%s/streams/%s/data/partitions/%d/last?count=10", base, url.PathEscape(stream), partition))
			var msgs []bridge.MessageObject
			if code != 200 || json.Unmarshal([]byte(body), &msgs) != nil {
				t.Fatalf("resend %s#%d: %d %s", stream, partition, code, body)
			}
			if len(msgs) > 0 || time.Now().After(deadline) {
				return msgs
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if m := last(stream, 3); len(m) != 1 || string(m[0].Content) != `{"v":1}` || m[0].Timestamp != 1700000000123 {
		t.Errorf("partition 3: %+v, want {\"v\":1} at the metadata's timestamp", m)
	}
	hall := streamr.PartitionForKey(8, "hall")
	if m := last(stream, hall); len(m) != 1 || string(m[0].Content) != `{"v":2,"room":"hall"}` {
		t.Errorf("partition %d (partitionKeyField room=hall): %+v", hall, m)
	}
	own := g.Identity().Publisher + "/home/temp"
	if m := last(own, 0); len(m) != 1 || string(m[0].Content) != `{"content":{"v":3}}` {
		t.Errorf("rule-mapped %s: %+v, want the payload as the rule takes it", own, m)
	}
}
