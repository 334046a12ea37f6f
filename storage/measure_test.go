package storage

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/tributary-iot/tributary/streamr"
)

// TestMeasureWriteAmplification runs the pipeline (concurrent durable
// appends, a signer committing signed messages in batches) and reports the
// bytes this process caused to be written (/proc/self/io write_bytes) per
// byte of signed message. It only reports: run it with
// TRIBUTARY_STORAGE_MEASURE=1 (and -long for a million readings and RSS);
// TRIBUTARY_STORAGE_MEASURE_CASES=<substring> selects cases, and
// TRIBUTARY_STORAGE_HEAP_PROFILE=<file> saves the live heap after each.
func TestMeasureWriteAmplification(t *testing.T) {
	if os.Getenv("TRIBUTARY_STORAGE_MEASURE") == "" {
		t.Skip("measurement only; set TRIBUTARY_STORAGE_MEASURE=1")
	}
	n := 200_000
	if *long {
		n = 1_000_000
	}
	cases := []measureCase{
		{"lsm-1KiB/l0=8/max", 1 << 10, n, 64, 0, 8, time.Millisecond, 0, nil},
		{"vlog-64B/l0=8/max", 64, n, 64, 0, 8, time.Millisecond, 0, nil},
		{"lsm-1KiB/l0=8/2000/s/sign20ms", 1 << 10, 20_000, 20, 2000, 8, 20 * time.Millisecond, 0, nil},
		{"vlog-64B/l0=8/2000/s/sign20ms", 64, 20_000, 20, 2000, 8, 20 * time.Millisecond, 0, nil},
		{"lsm-1KiB/l0=2/2000/s/sign20ms", 1 << 10, 20_000, 20, 2000, 2, 20 * time.Millisecond, 0, nil},
		{"lsm-1KiB/l0=8/max/presigned", 1 << 10, n, 64, 0, 8, 0, 0, nil},
		{"vlog-64B/l0=8/max/presigned", 64, n, 64, 0, 8, 0, 0, nil},
		{"lsm-1KiB/l0=8/2000/s/presigned", 1 << 10, 20_000, 20, 2000, 8, 0, 0, nil},
		{"vlog-64B/l0=8/2000/s/presigned", 64, 20_000, 20, 2000, 8, 0, 0, nil},
		{"lsm-1KiB/l0=8/2000/s/presigned/window=1ms", 1 << 10, 20_000, 20, 2000, 8, 0, time.Millisecond, nil},
		{"lsm-1KiB/l0=8/2000/s/presigned/window=2ms", 1 << 10, 20_000, 20, 2000, 8, 0, 2 * time.Millisecond, nil},
		{"lsm-1KiB/l0=8/2000/s/presigned/window=4ms", 1 << 10, 20_000, 20, 2000, 8, 0, 4 * time.Millisecond, nil},
		{"vlog-64B/l0=8/2000/s/presigned/window=2ms", 64, 20_000, 20, 2000, 8, 0, 2 * time.Millisecond, nil},
		{"lsm-1KiB/l0=8/max/presigned/window=2ms", 1 << 10, n, 64, 0, 8, 0, 2 * time.Millisecond, nil},
		{"vlog-64B/l0=8/max/presigned/window=2ms", 64, n, 64, 0, 8, 0, 2 * time.Millisecond, nil},
	}
	zstd := func(o badger.Options) badger.Options {
		return o.WithCompression(options.ZSTD).WithZSTDCompressionLevel(3)
	}
	zstd16 := func(o badger.Options) badger.Options { return zstd(o).WithBlockSize(16 << 10) }
	for _, w := range []time.Duration{0, time.Millisecond} {
		cases = append(cases,
			measureCase{fmt.Sprintf("tune/lsm/2000/s/window=%s/snappy", w), 1 << 10, 20_000, 20, 2000, 8, 0, w, nil},
			measureCase{fmt.Sprintf("tune/lsm/2000/s/window=%s/zstd3", w), 1 << 10, 20_000, 20, 2000, 8, 0, w, zstd},
			measureCase{fmt.Sprintf("tune/lsm/2000/s/window=%s/zstd3-16k", w), 1 << 10, 20_000, 20, 2000, 8, 0, w, zstd16},
		)
	}
	if f := os.Getenv("TRIBUTARY_STORAGE_MEASURE_CASES"); f != "" {
		cases = slices.DeleteFunc(cases, func(c measureCase) bool { return !strings.Contains(c.name, f) })
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := measurePipeline(t, Options{valueThreshold: c.threshold, level0Tables: c.l0, CommitWindow: c.window, tune: c.tune}, c.n, c.writers, c.rate, c.signEvery)
			t.Logf("%s: %d readings, signed msg %d B avg, wrote %.1f MB = %.2f× signed bytes (%.0f B/reading), %d reading commits (%.1f/commit), %.0f readings/s, %s",
				c.name, c.n, res.msgSize, float64(res.written)/1e6, float64(res.written)/float64(res.signedBytes),
				float64(res.written)/float64(c.n), res.commits, float64(c.n)/float64(res.commits), res.rate, res.rss)
		})
	}
}

type measureCase struct {
	name      string
	threshold int64
	n         int
	writers   int
	rate      int // readings/s over all writers; 0 = as fast as possible
	l0        int
	signEvery time.Duration // 0: presign every batch in the group commit
	window    time.Duration // Options.CommitWindow
	tune      func(badger.Options) badger.Options
}

type measured struct {
	written, signedBytes int64
	msgSize              int64
	commits              int64
	rate                 float64
	rss                  string
}

func measurePipeline(t *testing.T, opts Options, n, writers, rate int, signEvery time.Duration) measured {
	opts.Dir, opts.GCInterval, opts.MinFreeBytes = t.TempDir(), time.Hour, -1
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	var pre *testPresigner
	if signEvery == 0 {
		pre = &testPresigner{s: s, chains: map[string]*streamr.Chain{}}
		s.SetPresigner(pre)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	before := writeBytes(t)
	start := time.Now()
	var signedBytes atomic.Int64
	if pre == nil {
		wg.Go(func() { signedBytes.Store(signAll(t, s, n, signEvery)) })
	}
	appendPaced(t, s, n, writers, rate)
	if pre != nil {
		pre.mu.Lock()
		signedBytes.Store(pre.bytes)
		pre.mu.Unlock()
	}
	for signedBytes.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	var res measured
	res.commits = int64(counterValue(t, s.m.commits))
	cancel()
	wg.Wait()
	s.maintain(context.Background(), time.Now())
	runtime.GC()
	res.rss = rss(t)
	if f := os.Getenv("TRIBUTARY_STORAGE_HEAP_PROFILE"); f != "" {
		writeHeapProfile(t, f)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res.written = writeBytes(t) - before
	res.signedBytes = signedBytes.Load()
	res.msgSize = res.signedBytes / int64(n)
	res.rate = float64(n) / elapsed.Seconds()
	return res
}

// appendPaced appends n 200-byte readings from writers goroutines, at rate
// readings/s in total if rate > 0.
func appendPaced(t *testing.T, s *Store, n, writers, rate int) {
	var wg sync.WaitGroup
	per := n / writers
	for w := range writers {
		wg.Go(func() {
			payload := make([]byte, 200)
			var tick *time.Ticker
			if rate > 0 {
				tick = time.NewTicker(time.Duration(writers) * time.Second / time.Duration(rate))
				defer tick.Stop()
			}
			for i := range per {
				if tick != nil {
					<-tick.C
				}
				_, _ = rand.Read(payload)
				r := reading(testPart, "client-"+strconv.Itoa(w), string(payload))
				if err := s.Append(context.Background(), r, true); err != nil {
					t.Errorf("append %d/%d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// signAll signs readings as they arrive until n are signed and returns
// the total encoded size.
func signAll(t *testing.T, s *Store, n int, every time.Duration) int64 {
	var after uint64
	var total int64
	for done := 0; done < n; {
		pend, err := s.Pending(after, 256)
		if err != nil {
			t.Error(err)
			return 1
		}
		if len(pend) < 256 {
			time.Sleep(every)
		}
		if len(pend) == 0 {
			continue
		}
		msgs := make([]Signed, len(pend))
		for i, r := range pend {
			msgs[i] = signedFor(t, r, r.ReceivedAt+int64(r.Seq), 0, nil)
			total += int64(len(msgs[i].Encoded))
		}
		if err := s.CommitSigned(context.Background(), msgs, nil); err != nil {
			t.Error(err)
			return 1
		}
		after = pend[len(pend)-1].Seq
		done += len(pend)
	}
	return total
}

func writeBytes(t testing.TB) int64 {
	return procField(t, "/proc/self/io", "write_bytes:")
}

func rss(t *testing.T) string {
	st := func(f string) int64 { return procField(t, "/proc/self/status", f) }
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fmt.Sprintf("VmRSS %d kB (anon %d, file %d), VmHWM %d kB, Go heap in use %d kB, Go sys %d kB",
		st("VmRSS:"), st("RssAnon:"), st("RssFile:"), st("VmHWM:"), ms.HeapInuse>>10, ms.Sys>>10)
}

func procField(t testing.TB, file, field string) int64 {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			v, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s: no %s", file, field)
	return 0
}

// writeHeapProfile saves the live heap, to see what holds memory.
func writeHeapProfile(t *testing.T, name string) {
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}
