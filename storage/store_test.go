package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

func TestAppendPendingCommitSigned(t *testing.T) {
	s := running(t, Options{})
	in := appendAll(t, s, 5, payloadN)
	for i := 1; i < len(in); i++ {
		if in[i].Seq <= in[i-1].Seq {
			t.Fatalf("seq %d after %d: not increasing", in[i].Seq, in[i-1].Seq)
		}
	}
	got, err := s.Pending(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("pending: %d readings, want %d", len(got), len(in))
	}
	for i := range got {
		if got[i].Seq != in[i].Seq || got[i].Part != in[i].Part || got[i].Source != in[i].Source ||
			got[i].ReceivedAt != in[i].ReceivedAt || got[i].BootNanos != in[i].BootNanos ||
			!bytes.Equal(got[i].Payload, in[i].Payload) {
			t.Fatalf("pending[%d] = %+v, want %+v", i, got[i], in[i])
		}
	}

	// Sign the first three.
	var msgs []Signed
	var prev *streamr.MessageRef
	for i, r := range got[:3] {
		msgs = append(msgs, signedFor(t, r, 1000+int64(i), 0, prev))
		prev = &streamr.MessageRef{Timestamp: 1000 + int64(i)}
	}
	chains := map[string]streamr.ChainState{"part\x00client-1": {ID: "client-1", Last: prev}}
	if err := s.CommitSigned(context.Background(), msgs, chains); err != nil {
		t.Fatal(err)
	}
	rest, err := s.Pending(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || rest[0].Seq != in[3].Seq {
		t.Fatalf("pending after signing: %+v", rest)
	}
	if after, _ := s.Pending(in[3].Seq, 100); len(after) != 1 || after[0].Seq != in[4].Seq {
		t.Fatalf("pending after seq %d: %+v", in[3].Seq, after)
	}
	logged, err := s.After(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) != 3 {
		t.Fatalf("after: %d messages, want 3", len(logged))
	}
	for i, l := range logged {
		if l.Part != testPart || l.ReadingSeq != in[i].Seq || !bytes.Equal(l.Encoded, msgs[i].Encoded) || (i > 0 && l.Pos <= logged[i-1].Pos) {
			t.Fatalf("logged[%d] = %+v", i, l)
		}
	}
	if more, _ := s.After(logged[1].Pos, 10); len(more) != 1 || more[0].Pos != logged[2].Pos {
		t.Fatalf("after pos %d: %+v", logged[1].Pos, more)
	}
	st, ok, err := s.ChainState("part\x00client-1")
	if err != nil || !ok || st.ID != "client-1" || st.Last == nil || *st.Last != *prev {
		t.Fatalf("chain state = %+v, %v, %v", st, ok, err)
	}
	if _, ok, err := s.ChainState("nope"); ok || err != nil {
		t.Fatalf("missing chain state: %v, %v", ok, err)
	}
	if parts, err := s.Parts(); err != nil || len(parts) != 1 || parts[0] != testPart {
		t.Fatalf("parts = %v, %v", parts, err)
	}
	// A reading can be signed only once.
	err = s.CommitSigned(context.Background(), msgs[:1], nil)
	if !errors.Is(err, ErrNotPending) {
		t.Fatalf("signing reading %d again: err = %v, want ErrNotPending", msgs[0].ReadingSeq, err)
	}
}

func TestReopenKeepsCounters(t *testing.T) {
	dir := t.TempDir()
	var lastSeq, lastPos uint64
	for round := range 3 {
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = s.Run(ctx) })
		rs := appendAll(t, s, 3, payloadN)
		if rs[0].Seq <= lastSeq {
			t.Fatalf("round %d: seq %d reused (last %d)", round, rs[0].Seq, lastSeq)
		}
		lastSeq = rs[2].Seq
		// Sign all pending so no reading is left to derive the counter from.
		pend, err := s.Pending(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var msgs []Signed
		for i, r := range pend {
			msgs = append(msgs, signedFor(t, r, int64(round*100+i+1), 0, nil))
		}
		if err := s.CommitSigned(context.Background(), msgs, nil); err != nil {
			t.Fatal(err)
		}
		logged, err := s.After(lastPos, 100)
		if err != nil || len(logged) != len(msgs) {
			t.Fatalf("round %d: after %d: %d messages, %v", round, lastPos, len(logged), err)
		}
		lastPos = logged[len(logged)-1].Pos
		cancel()
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second close: %v", err)
		}
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keySchema, putU64(schemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: dir})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("schema version 2")) {
		t.Fatalf("open with newer schema: err = %v", err)
	}
}

func TestGroupCommitBatchesConcurrentAppends(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := running(t, Options{Registerer: reg})
	const writers, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append(context.Background(), reading(testPart, "c", payloadN(w*each+i)), true); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := counterValue(t, s.m.commits)
	t.Logf("%d appends in %.0f commits", writers*each, commits)
	if commits >= writers*each/2 {
		t.Fatalf("%.0f commits for %d concurrent appends: no group commit", commits, writers*each)
	}
	if n := s.pending.Load(); n != writers*each {
		t.Fatalf("pending gauge %d, want %d", n, writers*each)
	}
}

// TestDurableAppendWaitsForCommit checks that Append(durable) does not
// return before the committer has run: with Run not started, it must block.
func TestDurableAppendWaitsForCommit(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := reading(testPart, "c", "x")
	done := make(chan error, 1)
	go func() { done <- s.Append(context.Background(), r, true) }()
	waitQueued(t, s, 1)
	// Non-durable appends return at once, even without Run.
	if err := s.Append(context.Background(), reading(testPart, "c", "y"), false); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, s, 2)
	select {
	case err := <-done:
		t.Fatalf("durable append returned %v before any commit", err)
	default:
	}
	if got, _ := s.Pending(0, 10); len(got) != 0 {
		t.Fatalf("readings visible before commit: %+v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := s.Pending(0, 10)
	if err != nil || len(got) != 2 || got[0].Seq != r.Seq {
		t.Fatalf("after durable append returned: pending %+v, %v", got, err)
	}
	cancel()
	wg.Wait()
	// After Run ends, appends are refused.
	if err := s.Append(context.Background(), reading(testPart, "c", "z"), true); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after Run: %v", err)
	}
}

func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for {
		s.mu.Lock()
		q := len(s.queue)
		s.mu.Unlock()
		if q >= n {
			return
		}
		select {
		case <-t.Context().Done():
			t.Fatal("timed out waiting for the queue")
		default:
		}
	}
}

// TestCommitWindowGathersReadings checks that with a commit window,
// readings from concurrent writers share synced commits: each round of
// one reading per writer is committed in about one transaction.
func TestCommitWindowGathersReadings(t *testing.T) {
	s := running(t, Options{MinFreeBytes: -1, CommitWindow: 20 * time.Millisecond})
	const writers, rounds = 8, 5
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				if err := s.Append(context.Background(), reading(testPart, fmt.Sprintf("w%d", w), payloadN(i)), true); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if commits := counterValue(t, s.m.commits); commits > 2*rounds {
		t.Fatalf("%d readings took %.0f synced commits, want at most %d", writers*rounds, commits, 2*rounds)
	}
	if _, err := Open(Options{Dir: t.TempDir(), CommitWindow: -time.Second}); err == nil {
		t.Fatal("a negative commit window was accepted")
	}
}

// TestCommitWindowAdapts checks the window's two early exits on a real
// store: a page's worth of queued readings commits before the window
// ends, and readings too sparse to share a commit are not held at all.
func TestCommitWindowAdapts(t *testing.T) {
	t.Run("page filled", func(t *testing.T) {
		s := running(t, Options{MinFreeBytes: -1, CommitWindow: time.Hour})
		var waits []func(context.Context) error
		for i := 0; i*len(payloadN(0)) < 2*gatherBytes; i++ {
			wait, err := s.Enqueue(reading(testPart, "w", payloadN(i)), true)
			if err != nil {
				t.Fatal(err)
			}
			waits = append(waits, wait)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, wait := range waits {
			if err := wait(ctx); err != nil {
				t.Fatalf("a page's worth of readings waited out an hour-long window: %v", err)
			}
		}
		if n := counterValue(t, s.m.windows.WithLabelValues(windowFilled)); n < 1 {
			t.Fatalf("%v windows ended filled, want at least 1", n)
		}
	})
	t.Run("sparse arrivals", func(t *testing.T) {
		s := running(t, Options{MinFreeBytes: -1, CommitWindow: 200 * time.Millisecond})
		s.arrivals.perSecond = 2 // as measured over an earlier sample: 0.4 expected per window
		s.arrivals.since = time.Now()
		if err := s.Append(context.Background(), reading(testPart, "w", payloadN(0)), true); err != nil {
			t.Fatal(err)
		}
		if n := counterValue(t, s.m.windows.WithLabelValues(windowSkipped)); n != 1 {
			t.Fatalf("%v windows skipped, want 1", n)
		}
	})
}

func TestArrivalRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name  string
		every time.Duration // between arrivals
		n     int
		want  float64 // readings expected within 1 ms after the last
	}{
		{"2000/s", 500 * time.Microsecond, 2000, 2},
		{"100/s", 10 * time.Millisecond, 200, 0.1},
		{"one reading, no rate yet", 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a arrivalRate
			now := t0
			for range tt.n {
				a.add(now)
				now = now.Add(tt.every)
			}
			if got := a.expected(now, time.Millisecond); got < tt.want*0.8 || got > tt.want*1.25 {
				t.Fatalf("expected %.2f readings within 1 ms, want %.2f", got, tt.want)
			}
		})
	}
}
