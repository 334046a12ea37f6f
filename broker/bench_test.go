package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqttv3 "github.com/eclipse/paho.mqtt.golang"
)

// commitPeriod is the simulated storage's group-commit interval (an fsync every 200 µs).
const commitPeriod = 200 * time.Microsecond

// BenchmarkQoS1Ingest measures QoS 1 ingest through the broker: clients paho.mqtt.golang
// (MQTT 3.1.1) clients each keep up to 64 un-acked 200-byte PUBLISHes in flight (as in
// perf-baselines.md §3); b.N is split across them. Reported: msgs/s. Handlers:
//   - none: accepts with a nil Wait (already durable), so storage costs nothing;
//   - sync: waits for the simulated group commit inside HandlePublish (the pre-Verdict
//     behaviour: one message per client per commit);
//   - pipelined: returns the commit's Wait, so the broker pipelines each client's messages.
func BenchmarkQoS1Ingest(b *testing.B) {
	for _, mode := range []string{"none", "sync", "pipelined"} {
		for _, clients := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("wait=%s/clients=%d", mode, clients), func(b *testing.B) {
				var storage *groupCommit
				if mode != "none" {
					storage = startGroupCommit(b, commitPeriod)
				}
				benchmarkIngest(b, benchHandler(mode, storage), clients, storage)
			})
		}
	}
}

func benchHandler(mode string, storage *groupCommit) Handler {
	switch mode {
	case "none":
		return HandlerFunc(func(context.Context, *Message) Verdict { return Verdict{Code: Success} })
	case "sync":
		return HandlerFunc(func(ctx context.Context, _ *Message) Verdict {
			if err := storage.append()(ctx); err != nil {
				return Verdict{Code: UnspecifiedError}
			}
			return Verdict{Code: Success}
		})
	default:
		return HandlerFunc(func(context.Context, *Message) Verdict {
			return Verdict{Code: Success, Wait: storage.append()}
		})
	}
}

// benchmarkIngest reports msgs/s and, with storage, the mean interval between its commits
// (Go's timers may fire later than commitPeriod asks).
func benchmarkIngest(b *testing.B, h Handler, clients int, storage *groupCommit) {
	br := startBroker(b, Config{}, h)
	pubs := make([]mqttv3.Client, clients)
	for i := range pubs {
		pubs[i] = dialV3(b, "tcp://"+br.tcpAddr(), fmt.Sprintf("bench-%d", i), func(o *mqttv3.ClientOptions) {
			o.SetOrderMatters(false).SetMaxResumePubInFlight(64)
		})
	}
	payload := make([]byte, 200)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	commits := storage.count()
	var wg sync.WaitGroup
	for i, c := range pubs {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		wg.Go(func() { publishWindow(b, c, fmt.Sprintf("bench/p%d", i), payload, n, 64) })
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if n := storage.count() - commits; n > 0 {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "µs/commit")
	}
	if got := br.Stats().Accepted; got != uint64(b.N) {
		b.Fatalf("accepted %d of %d", got, b.N)
	}
}

// groupCommit simulates storage that makes appended messages durable in batches: every period
// it "fsyncs" and releases everything appended since the previous commit.
type groupCommit struct {
	commits atomic.Uint64

	mu    sync.Mutex
	batch chan struct{} // closed when the messages appended to it are durable
}

// count returns the number of commits so far; 0 for nil.
func (g *groupCommit) count() uint64 {
	if g == nil {
		return 0
	}
	return g.commits.Load()
}

// startGroupCommit starts the committer; it stops when the benchmark ends (after the broker,
// whose cleanup was registered later).
func startGroupCommit(b *testing.B, period time.Duration) *groupCommit {
	g := &groupCommit{batch: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				g.commit()
			}
		}
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return g
}

func (g *groupCommit) commit() {
	g.mu.Lock()
	durable := g.batch
	g.batch = make(chan struct{})
	g.mu.Unlock()
	close(durable)
	g.commits.Add(1)
}

// append adds a message to the next commit and returns the wait for it.
func (g *groupCommit) append() func(context.Context) error {
	g.mu.Lock()
	batch := g.batch
	g.mu.Unlock()
	return func(ctx context.Context) error {
		select {
		case <-batch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
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
