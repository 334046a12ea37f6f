package storage

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// testPublisher is the publisher ID of buildSigned's messages.
var testPublisher = []byte("publisher-address-20")

// storedKey is the chain state key under which bridge.Storer (Orderer
// name "store") records how far it holds a chain.
func storedKey(part streamr.StreamPartID, publisher []byte, chain string) string {
	return "delivered/store\x00" + part.String() + "\x00" + streamr.UserID(publisher) + "\x00" + chain
}

func ref(ts int64, seq int32) *streamr.MessageRef {
	return &streamr.MessageRef{Timestamp: ts, SequenceNumber: seq}
}

func TestReceipts(t *testing.T) {
	other := mustPart("0x1234567890abcdef1234567890abcdef12345678/sensors/temp#1")
	otherPublisher := []byte("another-publisher-20")
	s := running(t, Options{})
	states := map[string]streamr.ChainState{
		storedKey(testPart, testPublisher, "b"):      {ID: "b", Last: ref(20, 1)},
		storedKey(testPart, testPublisher, "a"):      {ID: "a", Last: ref(10, 0)},
		storedKey(testPart, testPublisher, "x\x00y"): {ID: "x\x00y", Last: ref(30, 2)},
		storedKey(testPart, testPublisher, "none"):   {ID: "none"}, // nothing held yet
		storedKey(other, testPublisher, "a"):         {ID: "a", Last: ref(99, 0)},
		storedKey(testPart, otherPublisher, "a"):     {ID: "a", Last: ref(98, 0)},
		// Another orderer's positions are what it delivered, not what is stored.
		"delivered/mqtt\x00" + testPart.String() + "\x00" + streamr.UserID(testPublisher) + "\x00m": {ID: "m", Last: ref(97, 0)},
	}
	if _, err := s.StoreReceived(t.Context(), nil, states); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		part      streamr.StreamPartID
		publisher []byte
		want      []streamr.ChainReceipt
	}{
		{"chains in order", testPart, testPublisher, []streamr.ChainReceipt{
			{ChainID: "a", Last: *ref(10, 0)}, {ChainID: "b", Last: *ref(20, 1)}, {ChainID: "x\x00y", Last: *ref(30, 2)},
		}},
		{"other partition", other, testPublisher, []streamr.ChainReceipt{{ChainID: "a", Last: *ref(99, 0)}}},
		{"other publisher", testPart, otherPublisher, []streamr.ChainReceipt{{ChainID: "a", Last: *ref(98, 0)}}},
		{"prefix of a publisher", testPart, testPublisher[:4], nil},
		{"unknown partition", mustPart("0x1234567890abcdef1234567890abcdef12345678/other#0"), testPublisher, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Receipts(tc.part, tc.publisher)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Receipts = %v, want %v", got, tc.want)
			}
		})
	}
}

// receiptGuard acknowledges what a receiving node's store says it holds,
// as the bridge's guard does with the receipts it fetches.
type receiptGuard struct {
	t    *testing.T
	recv *Store
}

func (g receiptGuard) Acknowledged(part streamr.StreamPartID, publisher []byte, chain string, r streamr.MessageRef) bool {
	rs, err := g.recv.Receipts(part, publisher)
	if err != nil {
		g.t.Error(err)
		return false
	}
	for _, rc := range rs {
		if rc.ChainID == chain {
			return r.Compare(rc.Last) <= 0
		}
	}
	return false
}

// receiver returns a store that holds chain "c" of testPublisher up to the
// message at ts (none if ts < 0).
func receiver(t *testing.T, ts int64) *Store {
	t.Helper()
	recv := running(t, Options{})
	if ts < 0 {
		return recv
	}
	st := map[string]streamr.ChainState{storedKey(testPart, testPublisher, "c"): {ID: "c", Last: ref(ts, 0)}}
	if err := recv.SaveChainStates(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	return recv
}

// filledDir returns a database directory holding n signed messages of
// chain "c" at ts0, ts0+1, …, and their average encoded size.
func filledDir(t *testing.T, n int, ts0 int64) (string, int64) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	total := fillSigned(t, s, n, 200, ts0)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, total / int64(n)
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRetentionGuard: retention deletes only what the receiver holds,
// oldest first, unless the quota forces it.
func TestRetentionGuard(t *testing.T) {
	const n, ts0 = 1000, 1_000_000
	const dropLog = `level=ERROR msg="deleted messages no required receiver has acknowledged: disk quota"`
	tests := []struct {
		name        string
		opts        Options
		acked       int64 // the receiver holds messages up to ts0+acked; -1: none
		noGuard     bool
		wantLeft    int
		wantDropped int
	}{
		{"nil guard: age", Options{Retention: time.Second}, -1, true, n - 400, 0},
		{"nil guard: bytes", Options{RetentionBytes: 100_000}, -1, true, -1, 0},
		{"guard blocks age", Options{Retention: time.Second}, 99, false, n - 100, 0},
		{"guard allows age", Options{Retention: time.Second}, 799, false, n - 400, 0},
		{"nothing acknowledged", Options{Retention: time.Second}, -1, false, n, 0},
		{"guard blocks bytes", Options{RetentionBytes: 100_000}, 49, false, n - 50, 0},
		{"quota over 90%: age", Options{Retention: time.Second, QuotaBytes: 1}, 99, false, n - 400, 300},
		{"quota over 90%: bytes", Options{RetentionBytes: 100_000, QuotaBytes: 1}, -1, false, -1, -1},
		{"quota not reached", Options{Retention: time.Second, QuotaBytes: 1 << 40}, 99, false, n - 100, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, size := filledDir(t, n, ts0)
			if tc.wantLeft < 0 { // retention by bytes keeps what fits
				tc.wantLeft = int(100_000 / size)
			}
			if tc.wantDropped < 0 {
				tc.wantDropped = n - tc.wantLeft
			}
			var logs syncBuffer
			reg := prometheus.NewRegistry()
			opts := tc.opts
			opts.Dir, opts.Registerer = dir, reg
			opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			if !tc.noGuard {
				opts.Guard = receiptGuard{t: t, recv: receiver(t, ts0+tc.acked)}
			}
			s := running(t, opts)
			s.maintain(t.Context(), time.UnixMilli(ts0+1400))

			logged, err := s.After(0, 2*n)
			if err != nil {
				t.Fatal(err)
			}
			if len(logged) != tc.wantLeft {
				t.Fatalf("%d messages left, want %d", len(logged), tc.wantLeft)
			}
			if tc.wantLeft > 0 && logged[0].Pos != uint64(n-tc.wantLeft+1) {
				t.Fatalf("oldest left at position %d, want %d", logged[0].Pos, n-tc.wantLeft+1)
			}
			if got := gatheredCounter(t, reg, "tributary_storage_unacknowledged_dropped_total"); got != float64(tc.wantDropped) {
				t.Errorf("unacknowledged_dropped_total = %v, want %d", got, tc.wantDropped)
			}
			if got := hasLine(logs.String(), dropLog, fmt.Sprintf(" count=%d ", tc.wantDropped)); got != (tc.wantDropped > 0) {
				t.Errorf("Error log of %d dropped messages present: %v\n%s", tc.wantDropped, got, logs.String())
			}
		})
	}
}

// TestRetentionQuotaBudget: the quota forces deletion of unacknowledged
// messages only for as many bytes as it is exceeded by, counting every
// deleted message towards it.
func TestRetentionQuotaBudget(t *testing.T) {
	const n, ts0 = 1000, 1_000_000
	dir, size := filledDir(t, n, ts0)
	s := running(t, Options{Dir: dir, Guard: receiptGuard{t: t, recv: receiver(t, ts0+99)}})
	tests := []struct {
		force       int64
		wantDeleted int
		wantDropped int
		wantBlocked bool
	}{
		{0, 100, 0, true},           // the acknowledged ones only
		{10*size - 1, 10, 10, true}, // stops once the excess is deleted
		{1, 1, 1, true},             // any excess deletes at least one
		{1 << 40, 289, 289, false},  // up to the age cutoff (ts0+400)
		{1 << 40, 0, 0, false},      // nothing expired is left
	}
	for i, tc := range tests {
		run := &retentionRun{cutoff: ts0 + 400, force: tc.force}
		deleted, err := s.retain(t.Context(), run)
		if err != nil {
			t.Fatal(err)
		}
		if deleted != tc.wantDeleted || run.dropped.count != tc.wantDropped {
			t.Fatalf("round %d (force %d B): deleted %d, %d unacknowledged; want %d, %d",
				i, tc.force, deleted, run.dropped.count, tc.wantDeleted, tc.wantDropped)
		}
		if tc.wantDropped > 0 && run.dropped.byPart[testPart.String()] != tc.wantDropped {
			t.Fatalf("round %d: dropped by part %v", i, run.dropped.byPart)
		}
		if (run.blocked != nil) != tc.wantBlocked {
			t.Fatalf("round %d: blocked at %v, want blocked %v", i, run.blocked, tc.wantBlocked)
		}
	}
}

// hasLine reports whether a line of logs contains all of parts.
func hasLine(logs string, parts ...string) bool {
	for line := range strings.Lines(logs) {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

func gatheredCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
