package overlay

import (
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkOverlayThroughput publishes pre-signed messages from A to B
// over loopback and waits for B's validated delivery (secp256k1 recovery on
// both nodes: A checks before publishing, B before delivering). "max" keeps
// at most window messages in flight, so its rate is what the pair sustains
// without loss and its latency is mostly queueing; "2000ps" paces at the
// design rate of 2,000 msg/s. Reported: msgs/s, p50/p99
// publish-to-delivery latency and CPU per message for the pair; ns/op is
// per message.
func BenchmarkOverlayThroughput(b *testing.B) {
	for _, transport := range []string{"tcp", "quic"} {
		b.Run(transport+"/max", func(b *testing.B) { benchThroughput(b, transport, 0) })
		b.Run(transport+"/2000ps", func(b *testing.B) { benchThroughput(b, transport, 2000) })
	}
}

func benchThroughput(b *testing.B, transport string, rate int) {
	const window = 1024
	pub := newPublisher(b)
	part := pub.part(b, 0)
	a := benchNode(b, loopbackConfig(transport, nil))
	bn := benchNode(b, loopbackConfig(transport, a.Addrs()))

	msgs := make([][]byte, b.N)
	ts := time.Now().UnixMilli()
	for i := range msgs {
		msgs[i] = pub.signed(b, part, ts, int32(i))
	}
	sent := make([]time.Time, b.N)
	lat := make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	slots := make(chan struct{}, window)
	done := make(chan struct{})
	pb, err := bn.Join(part, func(d Delivery) {
		now := time.Now()
		mu.Lock()
		lat = append(lat, now.Sub(sent[d.Msg.ID.SequenceNumber]))
		n := len(lat)
		mu.Unlock()
		<-slots
		if n == b.N {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	pa, err := a.Join(part, nil)
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for pa.Neighbours() == 0 || pb.Neighbours() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no mesh between the two nodes")
		}
		time.Sleep(10 * time.Millisecond)
	}

	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	for i, m := range msgs {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		slots <- struct{}{}
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		if err := pa.Publish(b.Context(), m); err != nil {
			b.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		got := len(lat)
		mu.Unlock()
		b.Fatalf("delivered %d of %d messages", got, b.N)
	}
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()

	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
}

// cpuTime is the process's user+system CPU time: both nodes of the pair,
// which is less sensitive to other load on the machine than wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchNode starts a node closed at the end of the benchmark.
func benchNode(b *testing.B, cfg Config) *Node {
	b.Helper()
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := n.Close(); err != nil {
			b.Errorf("close: %v", err)
		}
	})
	return n
}
