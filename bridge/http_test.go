package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

var httpTestPart = streamr.StreamPartID{Stream: "0x0000000000000000000000000000000000000001/http"}

type testAPI struct {
	url   string // http://127.0.0.1:port
	reg   *prometheus.Registry
	store *storage.Store
}

// startTestAPI serves the HTTP API over a real Badger store in dir on a
// loopback port.
func startTestAPI(t *testing.T, store *storage.Store, cfg HTTPServerConfig) *testAPI {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.History, cfg.Gatherer, cfg.Registerer = store, reg, reg
	cfg.Health = func() error { return nil }
	cfg.Receipts, _ = NewReceipts(ReceiptConfig{})
	srv, err := NewHTTPServer(ln, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		http.DefaultClient.CloseIdleConnections()
	})
	return &testAPI{url: "http://" + ln.Addr().String(), reg: reg, store: store}
}

// fillStore commits n signed messages of about size bytes each to
// httpTestPart, in one chain.
func fillStore(t *testing.T, s *storage.Store, n, size int) {
	t.Helper()
	content := []byte(`{"fill":"` + strings.Repeat("x", size) + `"}`)
	const batch = 512
	signed := make([]storage.Signed, 0, batch)
	for i := range n {
		r := &storage.Reading{Part: httpTestPart, Source: "c", Payload: content}
		// Readings of a batch are queued; the last one waits for the commit.
		if err := s.Append(t.Context(), r, len(signed) == batch-1 || i == n-1); err != nil {
			t.Fatal(err)
		}
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: httpTestPart.Stream, Timestamp: int64(1_700_000_000_000 + i), PublisherID: make([]byte, 20), MsgChainID: "c"},
			Body: &streamr.ContentMessage{Content: content},
		}
		signed = append(signed, storage.Signed{ReadingSeq: r.Seq, Envelope: streamr.Envelope{Msg: m}})
		if len(signed) == batch || i == n-1 {
			if err := s.CommitSigned(t.Context(), signed, nil); err != nil {
				t.Fatal(err)
			}
			signed = signed[:0]
		}
	}
}

func lastURL(api *testAPI, count int) string {
	return fmt.Sprintf("%s/streams/%s/data/partitions/0/last?count=%d&format=raw", api.url, strings.ReplaceAll(string(httpTestPart.Stream), "/", "%2F"), count)
}

// readFrames reads a raw-format answer and returns the timestamps of its
// messages.
func readFrames(t *testing.T, body io.Reader) []int64 {
	t.Helper()
	var ts []int64
	r := streamr.NewRawReader(bufio.NewReader(body), 1<<20)
	for {
		enc, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			return ts
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := streamr.Unmarshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, m.ID.Timestamp)
	}
}

func TestHTTPLastAnswersTheNewest(t *testing.T) {
	store := openStore(t, t.TempDir())
	fillStore(t, store, 1000, 10)
	api := startTestAPI(t, store, HTTPServerConfig{})
	for _, count := range []int{1, 10, 999, 1000, 1_000_000} {
		resp, err := http.Get(lastURL(api, count))
		if err != nil {
			t.Fatal(err)
		}
		ts := readFrames(t, resp.Body)
		resp.Body.Close()
		want := min(count, 1000)
		if len(ts) != want || ts[0] != int64(1_700_000_000_000+1000-want) || !slices.IsSorted(ts) {
			t.Errorf("last?count=%d: %d messages from %v, want the newest %d in order", count, len(ts), ts[:min(len(ts), 1)], want)
		}
	}
}

// memorySampler records the peak live Go heap (as marked by each GC) and
// anonymous RSS while it runs.
type memorySampler struct {
	stop             chan struct{}
	done             chan struct{}
	peakHeap, peakAn uint64
}

func sampleMemory() *memorySampler {
	s := &memorySampler{stop: make(chan struct{}), done: make(chan struct{})}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			s.peakHeap = max(s.peakHeap, sample[0].Value.Uint64())
			s.peakAn = max(s.peakAn, rssAnon())
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *memorySampler) Stop() (heap, anon uint64) {
	close(s.stop)
	<-s.done
	return s.peakHeap, s.peakAn
}

// rssAnon reads the process's anonymous resident memory (page cache of
// Badger's memory-mapped files is not counted).
func rssAnon() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// The attack: last?count=1000000 once, then 40 at a time, over 60 MB of
// stored messages. Answers stream, so the live heap grows by at most
// 16 MiB and anonymous RSS by 48 MiB (a ring buffer of the answer held
// 60 MB per request), at most max_queries run at once (the rest get 503,
// counted), and a normal client's /healthz and /metrics keep a p99 under 1 s.
func TestHTTPHugeLastBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 60 MB of Badger data")
	}
	const n, size = 6000, 10_000
	store := openStore(t, t.TempDir())
	fillStore(t, store, n, size)
	api := startTestAPI(t, store, HTTPServerConfig{})

	runtime.GC()
	base := sampleMemory()
	baseHeap, baseAnon := base.Stop()
	mem := sampleMemory()
	if got := drainLast(t, api, 1_000_000); got < n*size {
		t.Fatalf("answer of %d bytes, want all %d messages", got, n)
	}
	heap, anon := mem.Stop()
	t.Logf("one last?count=1000000 (%d MB answer): peak live heap %d MiB (base %d MiB), RssAnon %d MiB (base %d MiB)",
		n*size>>20, heap>>20, baseHeap>>20, anon>>20, baseAnon>>20)
	checkMemory(t, "one query", heap-baseHeap, anon-baseAnon)

	mem = sampleMemory()
	stopNormal, latencies := normalClient(t, api)
	var wg sync.WaitGroup
	var served, refused atomic.Int64
	for range 40 {
		wg.Go(func() {
			resp, err := http.Get(lastURL(api, 1_000_000))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				_, _ = io.Copy(io.Discard, resp.Body)
				served.Add(1)
			case http.StatusServiceUnavailable:
				checkJSONError(t, resp)
				refused.Add(1)
			default:
				t.Errorf("status %s", resp.Status)
			}
		})
	}
	wg.Wait()
	stopNormal()
	heap, anon = mem.Stop()
	p50, p99, worst := percentiles(*latencies)
	t.Logf("40 parallel: %d served, %d refused; peak live heap %d MiB, RssAnon %d MiB; normal client (%d requests) p50 %v p99 %v max %v",
		served.Load(), refused.Load(), heap>>20, anon>>20, len(*latencies), p50, p99, worst)
	checkMemory(t, "40 parallel queries", heap-baseHeap, anon-baseAnon)
	if served.Load() < 1 || refused.Load() == 0 || served.Load()+refused.Load() != 40 {
		t.Errorf("%d served, %d refused of 40: want some refused at max_queries = %d", served.Load(), refused.Load(), DefaultHTTPMaxQueries)
	}
	if got := api.counterValue(t, "tributary_http_refused_total", refusedQueries); got != float64(refused.Load()) {
		t.Errorf("tributary_http_refused_total{reason=max_queries} = %v, want %d", got, refused.Load())
	}
	if p99 > time.Second {
		t.Errorf("normal client p99 latency %v during the attack, want under 1s", p99)
	}
}

// The bounds for TestHTTPHugeLastBoundedMemory, over the idle process.
const (
	maxLiveHeapGrowth = 16 << 20
	maxRSSAnonGrowth  = 48 << 20
)

func checkMemory(t *testing.T, what string, heap, anon uint64) {
	t.Helper()
	if int64(heap) > maxLiveHeapGrowth {
		t.Errorf("%s: live heap grew %d MiB, want at most %d MiB", what, heap>>20, maxLiveHeapGrowth>>20)
	}
	if int64(anon) > maxRSSAnonGrowth && !raceEnabled {
		t.Errorf("%s: RssAnon grew %d MiB, want at most %d MiB", what, anon>>20, maxRSSAnonGrowth>>20)
	}
}

// drainLast reads a last?count answer and returns its size.
func drainLast(t *testing.T, api *testAPI, count int) int64 {
	t.Helper()
	resp, err := http.Get(lastURL(api, count))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// normalClient polls /healthz and /metrics, alternately, recording each
// request's latency, until stop is called.
func normalClient(t *testing.T, api *testAPI) (stop func(), latencies *[]time.Duration) {
	t.Helper()
	var got []time.Duration
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			path := []string{"/healthz", "/metrics"}[i%2]
			start := time.Now()
			resp, err := http.Get(api.url + path)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("normal client %s: %s", path, resp.Status)
			}
			got = append(got, time.Since(start))
		}
	}()
	return func() { close(done); <-finished }, &got
}

func percentiles(d []time.Duration) (p50, p99, worst time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

func checkJSONError(t *testing.T, resp *http.Response) {
	t.Helper()
	var e struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s: want a JSON error, got %v (%v)", resp.Status, e, err)
	}
}

// counterValue sums the counter name's series whose first label is
// label ("" for all).
func (api *testAPI) counterValue(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := api.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || m.GetLabel()[0].GetValue() == label {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// A page on evil.example that rebinds its name to 127.0.0.1 sends
// Host: evil.example:port; the API refuses it (421, counted) and answers
// the loopback names.
func TestHTTPHostCheck(t *testing.T) {
	store := openStore(t, t.TempDir())
	api := startTestAPI(t, store, HTTPServerConfig{})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(api.url, "http://"))
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:" + port, http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"LocalHost:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"evil.example:" + port, http.StatusMisdirectedRequest},
		{"evil.example", http.StatusMisdirectedRequest},
		{"localhost", http.StatusMisdirectedRequest}, // port 80, not ours
		{"localhost:1", http.StatusMisdirectedRequest},
		{"127.0.0.1.evil.example:" + port, http.StatusMisdirectedRequest},
	} {
		req, _ := http.NewRequest(http.MethodGet, api.url+"/healthz", nil)
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("Host %q: %s, want %d", tc.host, resp.Status, tc.want)
		}
		if tc.want != http.StatusOK {
			checkJSONError(t, resp)
		}
		resp.Body.Close()
	}
	if got := api.counterValue(t, "tributary_http_refused_total", refusedHost); got != 5 {
		t.Errorf("tributary_http_refused_total{reason=host} = %v, want 5", got)
	}
}

// A client that asks for everything and stops reading is cut off after
// write_timeout, freeing its query slot; one that sends half a header is
// cut off after read_header_timeout.
func TestHTTPSlowClientsCutOff(t *testing.T) {
	store := openStore(t, t.TempDir())
	fillStore(t, store, 20_000, 1000)
	api := startTestAPI(t, store, HTTPServerConfig{MaxQueries: 1, WriteTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(api.url, "http://")

	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	u := strings.TrimPrefix(lastURL(api, 1_000_000), api.url)
	fmt.Fprintf(stalled, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u, addr)
	deadline := time.Now().Add(10 * time.Second)
	for api.counterValue(t, "tributary_http_queries_aborted_total", "") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("a client that stopped reading was not cut off")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := drainLast(t, api, 10); n == 0 {
		t.Error("the query slot was not freed")
	}

	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	fmt.Fprintf(half, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", addr)
	_ = half.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, half)
	if err != nil || time.Since(start) > 3*time.Second {
		t.Errorf("half a header: connection closed after %v (%v), want after read_header_timeout", time.Since(start), err)
	}
}

// fixedAddrListener reports a chosen address; it never accepts.
type fixedAddrListener struct{ addr net.Addr }

func (l fixedAddrListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l fixedAddrListener) Close() error              { return nil }
func (l fixedAddrListener) Addr() net.Addr            { return l.addr }

// Beyond loopback the unauthenticated API needs AllowAnonymous, and then
// warns.
func TestHTTPRefusesNonLoopbackWithoutOptIn(t *testing.T) {
	for _, ip := range []string{"0.0.0.0", "192.168.1.10", "::"} {
		ln := fixedAddrListener{&net.TCPAddr{IP: net.ParseIP(ip), Port: 7171}}
		if _, err := NewHTTPServer(ln, HTTPServerConfig{}); err == nil || !strings.Contains(err.Error(), "allow_anonymous") {
			t.Errorf("%s: %v, want a refusal naming http.allow_anonymous", ip, err)
		}
		var logs bytes.Buffer
		if _, err := NewHTTPServer(ln, HTTPServerConfig{AllowAnonymous: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Errorf("%s with AllowAnonymous: %v", ip, err)
		}
		if !strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("%s with AllowAnonymous: no warning logged", ip)
		}
	}
	ln := fixedAddrListener{&net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 7171}}
	if _, err := NewHTTPServer(ln, HTTPServerConfig{}); err != nil {
		t.Errorf("127.0.0.2: %v", err)
	}
}
