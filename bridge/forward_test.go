package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// fakeOverlay records what is published per partition; a partition is
// reachable only when its peers flag is set (or everyone is).
type fakeOverlay struct {
	mu       sync.Mutex
	peers    map[streamr.StreamPartID]bool
	everyone bool                             // every partition has peers
	got      map[streamr.StreamPartID][]int32 // sequence numbers in publish order
	chains   []string                         // chain of each publish, in order
	delay    time.Duration                    // per publish, like a slow link

	joined    map[streamr.StreamPartID]bool // partitions with a handle not left
	maxJoined int                           // most joined at once
	misuse    []string                      // handles used after Leave, joined twice
}

func (o *fakeOverlay) Join(part streamr.StreamPartID, _ func(*streamr.StreamMessage, []byte)) (Topic, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.joined == nil {
		o.joined = make(map[streamr.StreamPartID]bool)
	}
	if o.joined[part] {
		o.misuse = append(o.misuse, "joined twice: "+part.String())
	}
	o.joined[part] = true
	o.maxJoined = max(o.maxJoined, len(o.joined))
	return &fakeTopic{o: o, part: part}, nil
}

// joinedNow returns how many partitions are joined and the most ever.
func (o *fakeOverlay) joinedNow() (now, most int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.joined), o.maxJoined
}

func (o *fakeOverlay) setPeers(part streamr.StreamPartID, ok bool) {
	o.mu.Lock()
	o.peers[part] = ok
	o.mu.Unlock()
}

func (o *fakeOverlay) published(part streamr.StreamPartID) []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int32(nil), o.got[part]...)
}

type fakeTopic struct {
	o    *fakeOverlay
	part streamr.StreamPartID
	left bool
}

func (t *fakeTopic) Leave() error {
	t.o.mu.Lock()
	defer t.o.mu.Unlock()
	if !t.left {
		t.left = true
		delete(t.o.joined, t.part)
	}
	return nil
}

func (t *fakeTopic) Publish(_ context.Context, encoded [][]byte) (int, error) {
	t.o.mu.Lock()
	if t.left {
		t.o.misuse = append(t.o.misuse, "published after Leave: "+t.part.String())
	}
	t.o.mu.Unlock()
	for i, enc := range encoded {
		m, err := streamr.Unmarshal(enc)
		if err != nil {
			return i, err
		}
		time.Sleep(t.o.delay)
		t.o.mu.Lock()
		if !t.o.peers[t.part] && !t.o.everyone {
			t.o.mu.Unlock()
			return i, fmt.Errorf("fake: %w", streamr.ErrNoPeers)
		}
		t.o.got[t.part] = append(t.o.got[t.part], m.ID.SequenceNumber)
		t.o.chains = append(t.o.chains, m.ID.MsgChainID)
		t.o.mu.Unlock()
	}
	return len(encoded), nil
}

// storeMessages appends n readings to part and commits a signed message
// (unsigned content is enough for the forwarder) for each, in chain "c".
func storeMessages(t *testing.T, s *storage.Store, part streamr.StreamPartID, n int) {
	t.Helper()
	storeChain(t, s, part, "c", n)
}

func storeChain(t *testing.T, s *storage.Store, part streamr.StreamPartID, chain string, n int) {
	t.Helper()
	var signed []storage.Signed
	for i := range n {
		r := &storage.Reading{Part: part, Source: "c", Payload: []byte("{}")}
		if err := s.Append(t.Context(), r, true); err != nil {
			t.Fatal(err)
		}
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: part.Stream, StreamPartition: int32(part.Partition), Timestamp: 1, SequenceNumber: int32(i), PublisherID: make([]byte, 20), MsgChainID: chain},
			Body: &streamr.ContentMessage{Content: []byte("{}")},
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		signed = append(signed, storage.Signed{ReadingSeq: r.Seq, Envelope: streamr.Envelope{Msg: m, Encoded: enc}})
		if len(signed) == 256 || i == n-1 { // one transaction stays small
			if err := s.CommitSigned(t.Context(), signed, nil); err != nil {
				t.Fatal(err)
			}
			signed = signed[:0]
		}
	}
}

func runForwarder(t *testing.T, s *storage.Store, o *fakeOverlay) (stop func()) {
	t.Helper()
	_, stop = startForwarder(t, s, o, ForwardConfig{Logger: slog.New(slog.DiscardHandler)})
	return stop
}

// startForwarder runs a forwarder retrying every 10 ms.
func startForwarder(t *testing.T, s *storage.Store, o *fakeOverlay, cfg ForwardConfig) (*Forwarder, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Retry = 10 * time.Millisecond
	f := NewForwarder(s, o, cfg)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return f, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func waitPublished(t *testing.T, o *fakeOverlay, part streamr.StreamPartID, n int) []int32 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := o.published(part)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A partition without peers keeps its messages (however many) without
// holding up other partitions; when peers appear they go out in order,
// and a restarted forwarder sends nothing twice.
func TestForwarderHoldsBackPerPartition(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	offline := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/offline"}
	online := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/online"}
	o := &fakeOverlay{peers: map[streamr.StreamPartID]bool{online: true}, got: map[streamr.StreamPartID][]int32{}}
	storeMessages(t, s, offline, 3*forwardBatch) // more than one batch held back
	storeMessages(t, s, online, 10)
	stop := runForwarder(t, s, o)
	if got := waitPublished(t, o, online, 10); len(got) != 10 {
		t.Fatalf("online partition got %d of 10 behind a held-back partition", len(got))
	}
	if got := o.published(offline); len(got) != 0 {
		t.Fatalf("%d messages published without peers", len(got))
	}
	o.setPeers(offline, true)
	// All but the last gossipWindow positions are a backlog: of those
	// only the newest goes out, and receivers fetch the rest.
	const total = 3 * forwardBatch
	head := total + 10
	want := total - (head - gossipWindow) + 1
	got := waitPublished(t, o, offline, want)
	first := int32(total - want)
	for i, seq := range got {
		if seq != first+int32(i) {
			t.Fatalf("message %d published as seq %d, want %d: out of order or missing", i, seq, first+int32(i))
		}
	}
	stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	storeMessages(t, s, online, 5)
	stop = runForwarder(t, s, o)
	defer stop()
	if got := waitPublished(t, o, online, 15); len(got) != 15 {
		t.Fatalf("online partition has %d messages after restart, want 15", len(got))
	}
	time.Sleep(50 * time.Millisecond) // five retry intervals for a duplicate to show
	if got := o.published(offline); len(got) != want {
		t.Fatalf("offline partition has %d messages after restart, want %d: re-sent", len(got), want)
	}
}

func openStore(t *testing.T, dir string) *storage.Store {
	t.Helper()
	s, err := storage.Open(storage.Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = s.Close()
	})
	return s
}

// Of a backlog, only each chain's newest message is gossiped, in log
// order, and the messages after the backlog go out in full; a live
// message arriving later goes out at once.
func TestForwarderGossipsOnlyTipsOfBacklog(t *testing.T) {
	s := openStore(t, t.TempDir())
	part := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/lane"}
	o := &fakeOverlay{peers: map[streamr.StreamPartID]bool{part: true}, got: map[streamr.StreamPartID][]int32{}}
	const backlog = 3000
	storeChain(t, s, part, "a", backlog)
	storeChain(t, s, part, "b", backlog)
	stop := runForwarder(t, s, o)
	defer stop()
	// Chain b fills the last gossipWindow positions: a is entirely
	// backlog (its tip goes out), b's older messages are too.
	want := 1 + 1 + gossipWindow
	got := waitPublished(t, o, part, want)
	time.Sleep(50 * time.Millisecond) // five retry intervals for extras to show
	o.mu.Lock()
	chains := append([]string(nil), o.chains...)
	o.mu.Unlock()
	if len(chains) != want {
		t.Fatalf("published %d messages, want %d (two tips and the window)", len(chains), want)
	}
	if chains[0] != "a" || got[0] != backlog-1 {
		t.Errorf("first published: chain %s seq %d, want a's tip %d", chains[0], got[0], backlog-1)
	}
	for i := 1; i < len(got); i++ {
		if chains[i] != "b" || got[i] != int32(backlog-gossipWindow-1+i-1) {
			t.Fatalf("message %d: chain %s seq %d, want b seq %d", i, chains[i], got[i], backlog-gossipWindow-1+i-1)
		}
	}
	storeChain(t, s, part, "live", 1)
	if got := waitPublished(t, o, part, want+1); len(got) != want+1 {
		t.Fatal("live message not forwarded after the backlog")
	}
}

// countingLog counts the synced position writes of a forwarder.
type countingLog struct {
	*storage.Store
	saves atomic.Int64
}

func (l *countingLog) SetCursors(ctx context.Context, cursors map[string]uint64) error {
	l.saves.Add(1)
	return l.Store.SetCursors(ctx, cursors)
}

// Messages committed one after another go out at once, each pass woken by
// its commit, without a synced position write per pass; the positions
// are saved when the forwarder stops, so a restart sends nothing twice.
func TestForwarderSavesPositionsLazily(t *testing.T) {
	s := openStore(t, t.TempDir())
	part := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/lazy"}
	o := &fakeOverlay{peers: map[streamr.StreamPartID]bool{part: true}, got: map[streamr.StreamPartID][]int32{}}
	log := &countingLog{Store: s}
	ctx, cancel := context.WithCancel(context.Background())
	f := NewForwarder(log, o, ForwardConfig{Retry: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	const n = 20
	for i := 1; i <= n; i++ {
		storeMessages(t, s, part, 1)
		f.Notify() // as the commit does
		if got := waitPublished(t, o, part, i); len(got) != i {
			t.Fatalf("commit %d: %d messages published", i, len(got))
		}
	}
	if saves := log.saves.Load(); saves > 1 {
		t.Errorf("%d synced position writes for %d passes within %s, want at most 1", saves, n, cursorSaveInterval)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	o2 := &fakeOverlay{peers: map[streamr.StreamPartID]bool{part: true}, got: map[streamr.StreamPartID][]int32{}}
	stop := runForwarder(t, s, o2)
	defer stop()
	time.Sleep(50 * time.Millisecond) // five retry intervals for a duplicate to show
	if got := o2.published(part); len(got) != 0 {
		t.Fatalf("a restarted forwarder sent %d messages again", len(got))
	}
}
