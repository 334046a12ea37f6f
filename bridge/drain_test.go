package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// failingSigner fails its first fails signatures, or all of them.
type failingSigner struct {
	*streamr.EVMKey
	always bool
	fails  atomic.Int64
}

var errKeyGone = errors.New("secure element not answering")

func (s *failingSigner) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	if s.always || s.fails.Add(-1) >= 0 {
		return nil, errKeyGone
	}
	return s.EVMKey.Sign(ctx, payload)
}

// drainPipeline stores n readings of one client through a pipeline whose
// signer never ran, as after kill -9 or during a stop.
func drainPipeline(t *testing.T, store *storage.Store, signer streamr.Signer, clock Clock, hold bool, n int) *Pipeline {
	t.Helper()
	rule, err := Compile(RuleConfig{Topic: "#", Stream: "{address}/{topic}"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Rules: []*Rule{rule}, Signer: signer, Log: store, Clock: clock, HoldUnsynced: hold,
		Logger: slog.New(slog.DiscardHandler), PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		wait, reason := p.Ingest(Publish{ClientID: "sensor-1", Topic: "drain/data", Payload: fmt.Appendf(nil, `{"i":%d}`, i), QoS: 1})
		if reason != nil {
			t.Fatal(reason)
		}
		if err := wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestDrain(t *testing.T) {
	const n = 300 // more than one SignBatch
	tests := []struct {
		name       string
		fails      int64 // signatures that fail first; negative: all
		unsynced   bool  // hold policy with an unsynchronised clock
		timeout    time.Duration
		wantSigned int
		wantErr    []error
	}{
		{name: "signs everything", timeout: time.Minute, wantSigned: n},
		{name: "retries a failed batch", fails: 3, timeout: time.Minute, wantSigned: n},
		{name: "key gone until the stop timeout", fails: -1, timeout: 200 * time.Millisecond, wantErr: []error{errKeyGone, context.DeadlineExceeded}},
		{name: "hold policy", unsynced: true, timeout: time.Minute, wantErr: []error{ErrHeld}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := streamr.GenerateEVMKey()
			if err != nil {
				t.Fatal(err)
			}
			signer := &failingSigner{EVMKey: key, always: tt.fails < 0}
			signer.fails.Store(tt.fails)
			store := openDrainStore(t)
			clock := &fakeClock{now: time.Now(), synced: !tt.unsynced}
			p := drainPipeline(t, store, signer, clock, tt.unsynced, n)
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			signed, err := p.Drain(ctx)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("Drain error %v, want it to wrap %v", err, want)
				}
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("Drain: %v", err)
			}
			if signed != tt.wantSigned {
				t.Errorf("Drain signed %d, want %d", signed, tt.wantSigned)
			}
			if got := store.PendingCount(); got != int64(n-tt.wantSigned) {
				t.Errorf("%d readings pending after Drain, want %d", got, n-tt.wantSigned)
			}
		})
	}
}

func TestNextDrainBatch(t *testing.T) {
	tests := []struct {
		n     int
		took  time.Duration
		limit int
		want  int
	}{
		{16, time.Millisecond, 256, 256},        // a software key: full batches
		{16, 3200 * time.Millisecond, 256, 2},   // a secure element at 5 signatures/s
		{1, 10 * time.Second, 256, 1},           // never below one
		{100, 0, 256, 256},                      // a batch faster than the clock resolves
		{16, 250 * time.Millisecond, 256, 32},   // in between
		{200, 500 * time.Millisecond, 100, 100}, // never above SignBatch
	}
	for _, tt := range tests {
		if got := nextDrainBatch(tt.n, tt.took, tt.limit); got != tt.want {
			t.Errorf("nextDrainBatch(%d, %s, %d) = %d, want %d", tt.n, tt.took, tt.limit, got, tt.want)
		}
	}
}

// A slow signer running out of time keeps what it signed before the
// deadline: batches shrink to what it can sign in drainBatchTime.
func TestDrainSlowSignerKeepsProgress(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	signer := &slowSigner{EVMKey: key, interval: 20 * time.Millisecond}
	store := openDrainStore(t)
	p := drainPipeline(t, store, signer, &fakeClock{now: time.Now(), synced: true}, false, 300)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	signed, err := p.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v, want the deadline", err)
	}
	if signed == 0 || int64(300-signed) != store.PendingCount() {
		t.Fatalf("Drain signed %d with %d pending; want progress before the deadline", signed, store.PendingCount())
	}
}

// A pipeline started after a drain continues the drained chain, and
// PendingByPart counts what is left per stream part.
func TestDrainThenRunContinuesChain(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	store := openDrainStore(t)
	clock := &fakeClock{now: time.Now(), synced: true}
	p := drainPipeline(t, store, key, clock, false, 5)
	if counts, err := store.PendingByPart(); err != nil || len(counts) != 1 {
		t.Fatalf("PendingByPart = %v, %v; want one part", counts, err)
	}
	if _, err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	next := drainPipeline(t, store, key, clock, false, 5) // a later run, fresh signer state
	if counts, err := store.PendingByPart(); err != nil || len(counts) != 1 {
		t.Fatalf("PendingByPart = %v, %v; want one part", counts, err)
	}
	if _, err := next.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	part := streamr.StreamPartID{Stream: streamr.StreamID(streamr.UserID(key.PublisherID()) + "/drain/data")}
	g := &testGateway{store: store}
	msgs := g.messages(t, part)
	if len(msgs) != 10 {
		t.Fatalf("%d messages, want 10", len(msgs))
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].PrevMsgRef == nil || *msgs[i].PrevMsgRef != msgs[i-1].ID.Ref() || msgs[i].ID.MsgChainID != msgs[0].ID.MsgChainID {
			t.Fatalf("message %d does not continue the chain: prev %v, want %s", i, msgs[i].PrevMsgRef, msgs[i-1].ID.Ref())
		}
	}
}

// openDrainStore opens a store whose group committer runs for the test.
func openDrainStore(t *testing.T) *storage.Store {
	t.Helper()
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	return store
}
