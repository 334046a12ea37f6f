package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/wsock"
)

// BenchmarkAppInterfaces compares the app interfaces with MQTT through one
// gateway in one run (BENCHMARKS.md, issue 16):
//
//   - publish/*: a durable acknowledgment per reading: MQTT QoS 1 PUBACK
//     vs HTTP 200, by 1 and 8 clients each publishing in turn;
//   - e2e/*: publisher to subscriber on the same gateway, at most window
//     readings in flight: MQTT to MQTT (the broker's own routing) vs
//     WebSocket to WebSocket (stored, signed, read back from the log).
//
// Each reports msgs/s and the p99 latency (ms) of its readings.
func BenchmarkAppInterfaces(b *testing.B) {
	a := newWSAppPings(b, "1h", "")
	mqttAddr := a.mqttAddr(b)
	httpURL := "http://" + a.HTTPAddr().String() + "/streams/" + url.PathEscape(a.stream) + "/"
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("publish/mqtt-qos1/clients=%d", clients), func(b *testing.B) {
			pubs := make([]func([]byte) error, clients)
			for i := range pubs {
				c := benchMQTT(b, mqttAddr, fmt.Sprintf("bench-pub-%d", i))
				pubs[i] = func(p []byte) error { return wait(c.Publish("bench/acked", 1, false, p)) }
			}
			benchAcked(b, pubs)
		})
		b.Run(fmt.Sprintf("publish/http/clients=%d", clients), func(b *testing.B) {
			pubs := make([]func([]byte) error, clients)
			for i := range pubs {
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				pubs[i] = func(p []byte) error { return benchPOST(client, httpURL, p) }
			}
			benchAcked(b, pubs)
		})
	}
	for _, window := range []int{1, 64} {
		b.Run(fmt.Sprintf("e2e/mqtt/window=%d", window), func(b *testing.B) {
			recv := make(chan []byte, 1024)
			sub := benchMQTT(b, mqttAddr, "bench-sub")
			if err := wait(sub.Subscribe("bench/e2e", 1, func(_ mqtt.Client, m mqtt.Message) { recv <- m.Payload() })); err != nil {
				b.Fatal(err)
			}
			pub := benchMQTT(b, mqttAddr, "bench-e2e")
			// Like the WebSocket publisher, it does not wait for each
			// acknowledgment: the window bounds what is in flight.
			benchE2E(b, window, recv, func(p []byte) error { pub.Publish("bench/e2e", 1, false, p); return nil })
			_ = wait(sub.Unsubscribe("bench/e2e"))
		})
		b.Run(fmt.Sprintf("e2e/websocket/window=%d", window), func(b *testing.B) {
			ctx := context.Background()
			sub, err := wsock.Dial(ctx, a.wsURL("subscribe", ""), nil, wsock.Options{})
			if err != nil {
				b.Fatal(err)
			}
			recv := make(chan []byte, 1024)
			go func() {
				for {
					_, p, err := sub.Read()
					if err != nil {
						return
					}
					recv <- p
				}
			}()
			pub, err := wsock.Dial(ctx, a.wsURL("publish", ""), nil, wsock.Options{})
			if err != nil {
				b.Fatal(err)
			}
			benchE2E(b, window, recv, func(p []byte) error { return pub.Write(wsock.Text, p) })
			_ = pub.Close()
			_ = sub.Close()
		})
	}
}

func benchMQTT(b *testing.B, addr, id string) mqtt.Client {
	b.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false).SetMaxResumePubInFlight(1000))
	if err := wait(c.Connect()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Disconnect(0) })
	return c
}

func wait(tok mqtt.Token) error {
	if !tok.WaitTimeout(30 * time.Second) {
		return fmt.Errorf("mqtt: no answer in 30s")
	}
	return tok.Error()
}

func benchPOST(c *http.Client, u string, p []byte) error {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(string(p)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("http publish: %s", resp.Status)
	}
	return nil
}

// benchAcked publishes b.N readings over the clients, each client one at
// a time, timing each until its acknowledgment.
func benchAcked(b *testing.B, pubs []func([]byte) error) {
	lat := make([][]time.Duration, len(pubs))
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c, pub := range pubs {
		n := b.N / len(pubs)
		if c < b.N%len(pubs) {
			n++
		}
		wg.Go(func() {
			for i := range n {
				t0 := time.Now()
				if err := pub([]byte(`{"i":` + strconv.Itoa(i) + `}`)); err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	report(b, time.Since(start), slices.Concat(lat...))
}

// benchE2E sends b.N readings with at most window in flight and times
// each from its send until the subscriber has it.
func benchE2E(b *testing.B, window int, recv <-chan []byte, pub func([]byte) error) {
	sent := make([]time.Time, b.N)
	lat := make([]time.Duration, 0, b.N)
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		timeout := time.NewTimer(time.Minute)
		defer timeout.Stop()
		for len(lat) < b.N {
			select {
			case p := <-recv:
				i, ok := benchIndex(p)
				if !ok || i >= b.N {
					continue // a reading of an earlier round
				}
				lat = append(lat, time.Since(sent[i]))
				credit <- struct{}{}
			case <-timeout.C:
				b.Errorf("received %d of %d readings", len(lat), b.N)
				return
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	round := time.Now().UnixNano()
	for i := range b.N {
		<-credit
		sent[i] = time.Now()
		if err := pub([]byte(fmt.Sprintf(`{"round":%d,"i":%d}`, round, i))); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	report(b, time.Since(start), lat)
}

// benchIndex reads "i" from a benchmark reading.
func benchIndex(p []byte) (int, bool) {
	s := string(p)
	j := strings.Index(s, `"i":`)
	if j < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimRight(s[j+4:], "}"))
	return n, err == nil
}

func report(b *testing.B, elapsed time.Duration, lat []time.Duration) {
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
