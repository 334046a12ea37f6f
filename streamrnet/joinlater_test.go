package streamrnet

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamrnet/jsnet"
)

// TestJoinAfterClient: the client asks for a stream partition the node
// has not joined yet; the nodes join it later and messages still flow.
// The node routes none of its DHT traffic through the client (the
// connection is private): had it, a DHT lookup of the partition's entry
// points could fail and the other node never join (seen before setPrivate).
func TestJoinAfterClient(t *testing.T) {
	ports := jsnet.FreePorts(t, 2)
	net := jsnet.Start(t, [2]int{ports[0], ports[1]})
	key, _ := streamr.GenerateEVMKey()
	got := make(chan []byte, 10)
	addr := key.Address()
	reg := prometheus.NewRegistry()
	c, err := New(Config{Proxies: []string{net.ProxyURL}, UserID: addr[:], Dialer: WebSocketDialer{},
		Deliver:    func(_ string, raw []byte) { got <- raw },
		Registerer: reg,
		Limits:     Limits{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, RequestTimeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c.Join(testPart, Subscribe)
	runClient(t, c)
	time.Sleep(500 * time.Millisecond)
	net.Join(testPart)
	waitJoined(t, c, testPart)
	net.Send(map[string]any{"cmd": "publish", "streamPart": testPart, "contents": []string{`{"late":1}`}})
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no message")
	}
	if n := testutil.ToFloat64(c.m.errors.WithLabelValues(net.ProxyURL, "unknown_method")); n != 0 {
		t.Errorf("the node sent the private client %v requests it does not serve (DHT routing)", n)
	}
}
