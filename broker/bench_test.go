package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	mqttv3 "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkQoS1Ingest measures QoS 1 ingest through the broker with a no-op Handler: clients
// paho.mqtt.golang (MQTT 3.1.1) clients each keep up to 64 un-acked 200-byte PUBLISHes in
// flight (as in perf-baselines.md §3); b.N is split across them. Reported: msgs/s.
func BenchmarkQoS1Ingest(b *testing.B) {
	for _, clients := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			noop := HandlerFunc(func(context.Context, *Message) Verdict { return Verdict{Code: Success} })
			br := startBroker(b, Config{}, noop)
			pubs := make([]mqttv3.Client, clients)
			for i := range pubs {
				pubs[i] = dialV3(b, "tcp://"+br.tcpAddr(), fmt.Sprintf("bench-%d", i), func(o *mqttv3.ClientOptions) {
					o.SetOrderMatters(false).SetMaxResumePubInFlight(64)
				})
			}
			payload := make([]byte, 200)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			var wg sync.WaitGroup
			for i, c := range pubs {
				n := b.N / clients
				if i < b.N%clients {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					publishWindow(b, c, fmt.Sprintf("bench/p%d", i), payload, n, 64)
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			if got := br.Stats().Accepted; got != uint64(b.N) {
				b.Fatalf("accepted %d of %d", got, b.N)
			}
		})
	}
}

// publishWindow publishes n QoS 1 messages keeping at most window un-acked.
func publishWindow(b *testing.B, c mqttv3.Client, topic string, payload []byte, n, window int) {
	inflight := make([]mqttv3.Token, 0, window)
	wait := func(tok mqttv3.Token) {
		if tok.Wait(); tok.Error() != nil {
			b.Error(tok.Error())
		}
	}
	for range n {
		if len(inflight) == window {
			wait(inflight[0])
			inflight = inflight[1:]
		}
		inflight = append(inflight, c.Publish(topic, 1, false, payload))
	}
	for _, tok := range inflight {
		wait(tok)
	}
}
