package statuspage

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource hands out a Status whose counters the test moves.
type fakeSource struct {
	mu sync.Mutex
	st Status
}

func (f *fakeSource) get(context.Context) Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Partitions = append([]Partition(nil), f.st.Partitions...)
	if f.st.Forward != nil {
		fw := *f.st.Forward
		st.Forward = &fw
	}
	return st
}

func (f *fakeSource) set(fn func(*Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
}

func newTestServer(t *testing.T, src *fakeSource, cfg Config) (*Server, *httptest.Server, context.CancelFunc) {
	t.Helper()
	cfg.Source = src.get
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	hs := httptest.NewServer(s.Handler())
	stop := func() { cancel(); <-done; hs.Close() }
	t.Cleanup(stop)
	return s, hs, stop
}

func TestStatusDocument(t *testing.T) {
	src := &fakeSource{st: Status{Health: Health{OK: true, State: "online"}, Partitions: []Partition{{ID: "x/y#0"}}}}
	_, hs, _ := newTestServer(t, src, Config{Interval: time.Hour})
	st, raw, err := Fetch(context.Background(), http.DefaultClient, hs.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.SchemaVersion != SchemaVersion || st.Seq == 0 || len(st.Partitions) != 1 || !strings.Contains(string(raw), `"schema_version":1`) {
		t.Fatalf("status %+v", st)
	}
	for _, path := range []string{"/", "/assets/app.js", "/assets/app.css"} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %s, %d bytes", path, resp.Status, len(body))
		}
	}
}

// Rates, sparklines, last-message times and the drain come from
// successive samples.
func TestSamplerRatesAndDrain(t *testing.T) {
	var logs strings.Builder
	s := newSampler(3, time.Second, slog.New(slog.NewTextHandler(&logs, nil)))
	t0 := time.Unix(1000, 0)
	sample := func(sec int, in uint64, backlog uint64) Status {
		st := Status{Readings: Readings{In: in}, Forward: &Forward{BacklogMessages: backlog},
			Partitions: []Partition{{ID: "p", MessagesOut: in}}}
		s.add(&st, t0.Add(time.Duration(sec)*time.Second), time.Second)
		return st
	}
	sample(0, 0, 5000)
	st := sample(1, 10, 4000)
	if st.Readings.RatePerSecond != 10 || st.Partitions[0].RatePerSecond != 10 || st.Partitions[0].LastMessage == nil {
		t.Fatalf("rates %+v %+v", st.Readings, st.Partitions[0])
	}
	d := st.Forward.Drain
	if d == nil || d.Peak != 5000 || d.Remaining != 4000 || d.Percent != 20 || d.ETASeconds == nil {
		t.Fatalf("drain %+v", d)
	}
	for i := 2; i < 6; i++ {
		st = sample(i, 10, 4000) // no readings, the backlog stuck
	}
	if got := st.Partitions[0].Rate; len(got) != 3 || got[2] != 0 {
		t.Errorf("sparkline %v, want the last 3 samples", got)
	}
	if st.Forward.Drain.RatePerSecond >= d.RatePerSecond {
		t.Errorf("drain rate %v did not fall while the backlog was stuck", st.Forward.Drain.RatePerSecond)
	}
	if st = sample(7, 10, 0); st.Forward.Drain != nil {
		t.Errorf("drain %+v after the backlog is gone", st.Forward.Drain)
	}
	// Logged once while it shrank (not again while stuck), and at the end.
	if n := strings.Count(logs.String(), `msg="forward backlog draining" remaining=4000 peak=5000 percent=20`); n != 1 ||
		!strings.Contains(logs.String(), `msg="forward backlog drained" peak=5000 took=7s`) {
		t.Errorf("drain logs:\n%s", logs.String())
	}
	if st = sample(8, 10, 100); st.Forward.Drain != nil {
		t.Errorf("a backlog of 100 is reported as a drain: %+v", st.Forward.Drain)
	}
}

// Each open page gets every new snapshot as an event; past
// MaxStreams a page is refused (503, counted); stopping the server ends
// the streams.
func TestEventsStreamAndLimit(t *testing.T) {
	src := &fakeSource{st: Status{Health: Health{OK: true}}}
	reg := prometheus.NewRegistry()
	s, hs, stop := newTestServer(t, src, Config{Interval: 20 * time.Millisecond, MaxStreams: 1, Registerer: reg})
	resp, err := http.Get(hs.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := readEvents(resp.Body)
	first := <-events
	src.set(func(st *Status) { st.MQTT.Clients = 7 })
	deadline := time.After(5 * time.Second)
	for got := first; got.MQTT.Clients != 7; {
		select {
		case got = <-events:
			if got.Seq <= first.Seq {
				t.Fatalf("event seq %d after %d", got.Seq, first.Seq)
			}
		case <-deadline:
			t.Fatal("no event with the new client count")
		}
	}
	second, err := http.Get(hs.URL + "/status/events")
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable || testutil.ToFloat64(s.refused) != 1 {
		t.Errorf("second stream at max 1: %s, refused %v", second.Status, testutil.ToFloat64(s.refused))
	}
	stop()
	for range events {
	} // the stream ends with the server
}

func readEvents(r io.Reader) <-chan Status {
	out := make(chan Status, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var st Status
				if json.Unmarshal([]byte(data), &st) == nil {
					out <- st
				}
			}
		}
	}()
	return out
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkSample is the server's own work per snapshot on a gateway with
// 16 partitions and full sparklines: rates, history, drain, JSON.
func BenchmarkSample(b *testing.B) {
	s := newSampler(DefaultHistory, time.Hour, discard())
	parts := make([]Partition, 16)
	for i := range parts {
		parts[i] = Partition{ID: "0x0000000000000000000000000000000000000001/sensors/" + strings.Repeat("x", i) + "#0",
			PeerIDs: []string{"12D3KooWCftFQbYCCWg4YALqhMJx3N37kkDW1zMuY7JbKi4WVDM8"}, Peers: 1}
	}
	now := time.Unix(0, 0)
	b.ReportAllocs()
	size := 0
	for i := 0; b.Loop(); i++ {
		st := Status{Readings: Readings{In: uint64(i * 10)}, Forward: &Forward{BacklogMessages: 5000}, Partitions: append([]Partition(nil), parts...)}
		for j := range st.Partitions {
			st.Partitions[j].MessagesOut = uint64(i*j + i%7) // uneven rates
		}
		now = now.Add(time.Second + time.Duration(i%3)*time.Millisecond)
		s.add(&st, now, time.Second)
		out, err := json.Marshal(st)
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "bytes/snapshot")
}

// With [api] keys the gateway wants a key on /status; Fetch sends the one
// it is given as the HTTP plugin's Bearer token, and none otherwise.
func TestFetchSendsAPIKey(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k1" {
			http.Error(w, `{"error":"missing or wrong API key"}`, http.StatusUnauthorized)
			return
		}
		_, _ = fmt.Fprintf(w, `{"schema_version":%d}`, SchemaVersion)
	}))
	defer hs.Close()
	for _, tt := range []struct {
		key     string
		wantErr string
	}{{"k1", ""}, {"", "401"}, {"k2", "401"}} {
		_, _, err := Fetch(context.Background(), hs.Client(), hs.URL, tt.key)
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Fetch with key %q: %v, want error %q", tt.key, err, tt.wantErr)
		}
	}
}
