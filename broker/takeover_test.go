package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A client that reconnects with a persistent session the moment its clean session ends keeps
// getting its messages. mochi's clean-session cleanup (server.go:488-492) checks for a take-over
// and only then deletes the client by ID: a new connection established in between was deleted
// with it, and every message for it was skipped silently. The old session's many
// subscriptions widen that window.
func TestReconnectAsCleanSessionEnds(t *testing.T) {
	r := startBroker(t, Config{}, &testHandler{})
	filters := make(packets.Subscriptions, 500)
	for i := range filters {
		filters[i] = packets.Subscription{Filter: fmt.Sprintf("old/%d", i), Qos: 1}
	}
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for round := range rounds {
		id := fmt.Sprintf("sensor-%d", round%4)
		old := dialRaw(t, r.tcpAddr(), 4)
		old.connect(old.connectPacket(id, "", ""))
		old.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: filters})
		if ack, err := old.read(waitTimeout); err != nil || ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("round %d: SUBACK %v, %v", round, ack.FixedHeader, err)
		}
		old.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		_ = old.conn.Close()

		cur := dialRaw(t, r.tcpAddr(), 4)
		pk := cur.connectPacket(id, "", "")
		pk.Connect.Clean = false
		cur.connect(pk)
		topic := fmt.Sprintf("got/%d", round)
		cur.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: topic, Qos: 1}}})
		if ack, err := cur.read(waitTimeout); err != nil || ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("round %d: SUBACK %v, %v", round, ack.FixedHeader, err)
		}
		if err := r.Publish(topic, []byte("reading"), 1); err != nil {
			t.Fatal(err)
		}
		got, err := cur.read(2 * time.Second)
		if err != nil || got.FixedHeader.Type != packets.Publish || got.TopicName != topic {
			t.Fatalf("round %d: the reconnected session got %v %q, %v: want the PUBLISH to %s", round, got.FixedHeader, got.TopicName, err, topic)
		}
		_ = cur.conn.Close()
	}
}
