package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// slowBacklog is the backlog TestBacklogDrainSlowReceiver drains in the
// default suite; with -backlog set it drains that many instead (100,000
// takes several minutes per case on 2 cores).
const slowBacklog = 20_000

// receiverCPU is the CPU share the slow receiver gets, in percent of one
// core, while the publisher runs unthrottled on every core: at least 10×
// slower.
const receiverCPU = 15

// TestBacklogDrainSlowReceiver drains a backlog from bridge A to a storing
// bridge B that is much slower: B runs on one OS thread under a tight Go
// memory limit and, where the kernel lets the test create a cgroup, a
// CPU quota of receiverCPU % of one core. It runs once with A on the
// default memory limit and once with none (A at full speed). B must end
// with every reading exactly once, in chain order, within a bounded time:
// the forwarder gossips only each chain's tip of a backlog and B fetches
// the rest at its own pace, so A cannot overrun it.
func TestBacklogDrainSlowReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("loads real bridges")
	}
	n := slowBacklog
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "backlog" {
			n = *backlogReadings
		}
	})
	for _, limitA := range []string{"default", "off"} {
		t.Run("A memory limit "+limitA, func(t *testing.T) { drainToSlowReceiver(t, n, limitA) })
	}
}

func drainToSlowReceiver(t *testing.T, n int, limitA string) {
	a := newInstance(t, overlayTable("tcp", "")+"\n[storage]\nquota = \"8GB\"\n")
	if limitA == "off" {
		a.extraEnv = []string{"GOMEMLIMIT=off"}
	}
	a.start()
	defer a.stop()
	addrA := a.address()
	stream := addrA + "/backlog/data"
	fill(t, a, "backlog/data", n)
	waitMetric(t, a, "tributary_messages_signed_total", float64(n), 5*time.Minute)

	bootstrap := a.bootstrapAddr("tcp")
	b := newInstance(t, overlayTable("tcp", bootstrap)+fmt.Sprintf(`
[[store]]
stream = %q
`, stream))
	b.setLogLevel("info") // debug logs of every message would slow B down further
	b.extraEnv = []string{"GOMAXPROCS=1", "GOMEMLIMIT=24MiB"}
	start := time.Now()
	b.start()
	defer b.stop()
	throttled, release := throttleCPU(t, b.cmd.Process.Pid, receiverCPU)
	waitMetric(t, b, `tributary_order_delivered_total{orderer="store"}`, float64(n), 15*time.Minute)
	drain := time.Since(start)
	release() // reading 100,000 messages back out of B on 15 % of a core would outlast waitForExport
	stored := waitForExport(t, b, stream, n)
	checkExactlyOnceInOrder(t, stored, n)
	t.Logf("A memory limit %s, B on 1 thread, 24 MiB, CPU quota %s: drained %d readings in %s (%.0f msg/s); B's peak RSS %.1f MB",
		limitA, throttled, n, drain.Round(time.Millisecond), float64(n)/drain.Seconds(), peakRSSMB(t, b))
}

// checkExactlyOnceInOrder checks an export of readings published by
// fill: each of its 10 clients is one chain holding i = c, c+10, … in
// order, and the chains together hold every reading once.
func checkExactlyOnceInOrder(t *testing.T, msgs []*streamr.StreamMessage, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Errorf("B stored %d messages, want %d", len(msgs), n)
	}
	next := make(map[string]int) // chain → next i expected
	first := make(map[int]bool)  // client offsets seen
	for _, m := range msgs {
		var r struct{ I int }
		if err := json.Unmarshal(m.Content().Content, &r); err != nil {
			t.Fatalf("stored message %s: %v", m.ID.Ref(), err)
		}
		want, seen := next[m.ID.MsgChainID]
		if !seen {
			want = r.I % 10
			if first[want] {
				t.Fatalf("two chains start at reading %d", want)
			}
			first[want] = true
		}
		if r.I != want {
			t.Fatalf("chain %s: reading %d where %d was due (missing, duplicated or out of order)", m.ID.MsgChainID, r.I, want)
		}
		next[m.ID.MsgChainID] = want + 10
	}
}

// throttleCPU puts pid in a cgroup (v1 cpu controller) limited to percent
// of one core until release is called (at the latest at cleanup). Where
// that is not possible it says so in the log and returns "none".
func throttleCPU(t *testing.T, pid, percent int) (limit string, release func()) {
	t.Helper()
	dir := filepath.Join("/sys/fs/cgroup/cpu", fmt.Sprintf("tributary-test-%d", pid))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Logf("NOTE: no CPU quota for the slow receiver (%v): it is slowed by GOMAXPROCS=1 and its memory limit only", err)
		return "none", func() {}
	}
	write := func(file, v string) error { return os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644) }
	if err := write("cpu.cfs_period_us", "100000"); err != nil {
		t.Fatal(err)
	}
	if err := write("cpu.cfs_quota_us", strconv.Itoa(percent*1000)); err != nil {
		t.Fatal(err)
	}
	if err := write("cgroup.procs", strconv.Itoa(pid)); err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() {
		_ = os.WriteFile("/sys/fs/cgroup/cpu/cgroup.procs", []byte(strconv.Itoa(pid)), 0o644) // if still running
		if err := os.Remove(dir); err != nil {
			t.Logf("remove cgroup %s: %v", dir, err)
		}
	})
	t.Cleanup(release)
	return fmt.Sprintf("%d %% of a core", percent), release
}

// setLogLevel replaces the harness's debug level in the instance's config.
func (in *instance) setLogLevel(level string) {
	in.t.Helper()
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `level = "debug"`, fmt.Sprintf("level = %q", level), 1))
	if err := os.WriteFile(in.config, cfg, 0o600); err != nil {
		in.t.Fatal(err)
	}
}
