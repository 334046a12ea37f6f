package streamrnet

import (
	"fmt"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamrnet/jsnet"
)

// BenchmarkPublishThroughProxy publishes b.N signed messages through one
// proxy node and counts them arriving at the other JS node, then, in the
// same run, lets a JS proxy client (the SDK's light-client path through
// the same proxy) publish as many, counted the same way. Reported:
// msgs/s of each and their ratio (go/js). Signing happens before timing
// in both.
func BenchmarkPublishThroughProxy(b *testing.B) {
	ports := jsnet.FreePorts(b, 2)
	net := jsnet.Start(b, [2]int{ports[0], ports[1]}, testPart)
	net.Send(map[string]any{"cmd": "verify", "on": false})
	net.Wait(10*time.Second, func(e jsnet.Event) bool { return e.Event == "verify" })
	key := testKey(b)
	c := newTestClient(b, []string{net.ProxyURL}, key, nil)
	c.Join(testPart, Publish)
	runClient(b, c)
	waitJoined(b, c, testPart)
	// Both paths are warmed up first (the nodes' code is JIT-compiled
	// while it runs): the one measured first would otherwise pay for it.
	warm := min(b.N, 500)
	msgs := signedChain(b, key, testPart, warm+b.N, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) })
	goPublish(b, net, c, msgs[:warm])
	jsPublish(b, net, warm)

	b.ResetTimer()
	goRate := goPublish(b, net, c, msgs[warm:])
	b.StopTimer()
	jsRate := jsPublish(b, net, b.N)
	b.ReportMetric(goRate, "go_msgs/s")
	b.ReportMetric(jsRate, "js_msgs/s")
	b.ReportMetric(goRate/jsRate, "go/js")
}

// goPublish publishes msgs through the client and returns the rate at
// which they arrived at the other node.
func goPublish(b *testing.B, net *jsnet.Network, c *Client, msgs [][]byte) float64 {
	net.Send(map[string]any{"cmd": "count", "streamPart": testPart, "count": len(msgs)})
	net.Wait(10*time.Second, func(e jsnet.Event) bool { return e.Event == "counting" })
	start := time.Now()
	publishAll(b, c, testPart, msgs)
	net.Wait(2*time.Minute, func(e jsnet.Event) bool { return e.Event == "counted" })
	return float64(len(msgs)) / time.Since(start).Seconds()
}

// jsPublish has a JS proxy client publish n messages and returns the rate
// at which they arrived at the other node.
func jsPublish(b *testing.B, net *jsnet.Network, n int) float64 {
	net.Send(map[string]any{"cmd": "jsbench", "streamPart": testPart, "count": n})
	e := net.Wait(2*time.Minute, func(e jsnet.Event) bool { return e.Event == "counted" })
	return float64(e.Count) / e.Seconds
}
