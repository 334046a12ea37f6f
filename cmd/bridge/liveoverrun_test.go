package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// liveOverrun is how many readings TestLiveOverrunSlowReceiver publishes at
// full speed while the slow receiver listens (20000 for the long run): at
// several thousand per second, A's gossip outruns a receiver on receiverCPU %
// of a core within a second, long before the load ends. The test runs only
// when it is set: it exercises shed_queue_wait, which is off by default, and
// takes 2–8 minutes on a loaded machine (TestShedInsteadOfOverrun in overlay
// covers the shedding in every run).
var liveOverrun = flag.Int("live-overrun", 4000, "readings TestLiveOverrunSlowReceiver publishes into a CPU-throttled, shedding receiver (20000 for the long run)")

// TestLiveOverrunSlowReceiver loads bridge A at full speed while a much
// slower storing bridge B (one OS thread, a tight memory limit and, where
// the kernel lets the test create a cgroup, receiverCPU % of one core) is
// connected: the live path, not a backlog. B must store every reading
// exactly once and in chain order, and nothing may overflow pubsub's
// validation queue (an overrun: messages dropped silently, B spending its
// CPU on the queue's tail while the loss is found by gap fill). B sheds
// what waited longer than shed_queue_wait instead and pulls it by resend;
// the test reports how many it shed, filled and received twice.
func TestLiveOverrunSlowReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("a real pair of bridges, B throttled")
	}
	liveReadings := *liveOverrun
	// Stored at 500/s or more on a loaded machine (4,000 in 5 s, 20,000 in
	// 30-45 s at load 1-2); a tail lost for good stalls it.
	storeWithin := max(2*time.Minute, time.Duration(liveReadings)*2*time.Millisecond)
	a := newInstance(t, overlayTable("tcp", ""))
	a.start()
	defer a.stop()
	stream := a.address() + "/live/data"
	part := stream + "#0"

	b := newInstance(t, overlayTable("tcp", a.bootstrapAddr("tcp"))+"shed_queue_wait = \"200ms\"\n"+fmt.Sprintf("\n[[store]]\nstream = %q\n", stream))
	b.setLogLevel("info")
	b.extraEnv = []string{"GOMAXPROCS=1", "GOMEMLIMIT=24MiB"}
	b.start()
	defer b.stop()
	start := time.Now()
	var published time.Duration
	filled := make(chan struct{})
	go func() {
		defer close(filled)
		fill(t, a, "live/data", liveReadings)
		published = time.Since(start)
	}()
	// A joins the partition with its first reading; B is slowed once the
	// mesh has formed, while the rest of the load is still to come.
	waitMetric(t, b, fmt.Sprintf("tributary_overlay_neighbours{stream_part=%q}", part), 1, 30*time.Second)
	throttled, release := throttleCPU(t, b.cmd.Process.Pid, receiverCPU)
	<-filled
	waitMetric(t, b, `tributary_order_delivered_total{orderer="store"}`, float64(liveReadings), storeWithin)
	took := time.Since(start)
	release()
	counts := metricSums(t, b, "tributary_overlay_drops_total", "tributary_overlay_duplicates_total",
		"tributary_order_gaps_total", "tributary_order_filled_total", "tributary_order_stale_total", "tributary_order_lost_total",
		"tributary_order_tail_probes_total")
	stored := waitForExport(t, b, stream, liveReadings)
	checkExactlyOnceInOrder(t, stored, liveReadings)
	t.Logf("B on 1 thread, 24 MiB, CPU quota %s: %d readings published in %s (%.0f/s), all stored in %s; B's counters: %v",
		throttled, liveReadings, published.Round(time.Millisecond), float64(liveReadings)/published.Seconds(), took.Round(time.Millisecond), counts)
	if n := counts[`tributary_overlay_drops_total{reason="validation_queue_full"}`]; n > 0 {
		t.Errorf("B's validation queue overflowed: %.0f messages dropped by pubsub (an overrun)", n)
	}
	if n := counts["tributary_order_lost_total"]; n > 0 {
		t.Errorf("B gave %.0f gaps up", n)
	}
}

// metricSums reads in's metrics and sums each named family's samples by
// name and reason label ("name" alone when a sample has no reason).
func metricSums(t *testing.T, in *instance, names ...string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sums := make(map[string]float64)
	for _, line := range strings.Split(string(body), "\n") {
		for _, name := range names {
			rest, ok := strings.CutPrefix(line, name)
			if !ok || (rest[0] != ' ' && rest[0] != '{') {
				continue
			}
			key := name
			if _, r, ok := strings.Cut(rest, `reason="`); ok {
				key += `{reason="` + r[:strings.IndexByte(r, '"')] + `"}`
			}
			var v float64
			if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err == nil {
				sums[key] += v
			}
		}
	}
	return sums
}
