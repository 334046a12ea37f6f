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
	msgs := signedChain(b, key, testPart, b.N, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) })

	b.ResetTimer()
	net.Send(map[string]any{"cmd": "count", "streamPart": testPart, "count": b.N})
	net.Wait(10*time.Second, func(e jsnet.Event) bool { return e.Event == "counting" })
	start := time.Now()
	publishAll(b, c, testPart, msgs)
	net.Wait(2*time.Minute, func(e jsnet.Event) bool { return e.Event == "counted" })
	goRate := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()

	net.Send(map[string]any{"cmd": "jsbench", "streamPart": testPart, "count": b.N})
	js := net.Wait(2*time.Minute, func(e jsnet.Event) bool { return e.Event == "counted" })
	jsRate := float64(js.Count) / js.Seconds
	b.ReportMetric(goRate, "go_msgs/s")
	b.ReportMetric(jsRate, "js_msgs/s")
	b.ReportMetric(goRate/jsRate, "go/js")
}
