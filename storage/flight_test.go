package storage

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/tributary-iot/tributary/streamr"
)

// stagedPresigner is a testPresigner that lets a test order the group
// committer's steps: the first Presign waits until the test has queued the
// second reading, so the committer finds it queued when it hands the first
// batch to its commit.
type stagedPresigner struct {
	*testPresigner
	first    chan struct{} // closed when the first Presign starts
	queued   chan struct{} // closed by the test once the second reading is queued
	second   chan struct{} // closed when the second Presign starts
	bloat    bool          // the first batch's messages are too large for one transaction
	mu       sync.Mutex
	calls    int
	order    []string // "presign N" and "committed N" in call order
	commits  int
	waitNext func() bool // run by the first Committed; false: it gave up waiting
	gaveUp   bool
}

func newStagedPresigner(s *Store) *stagedPresigner {
	return &stagedPresigner{
		testPresigner: &testPresigner{s: s, chains: map[string]*streamr.Chain{}},
		first:         make(chan struct{}), queued: make(chan struct{}), second: make(chan struct{}),
	}
}

func (p *stagedPresigner) Presign(ctx context.Context, readings []Reading) ([]Signed, map[string]streamr.ChainState, error) {
	p.mu.Lock()
	p.calls++
	n := p.calls
	p.order = append(p.order, "presign")
	p.mu.Unlock()
	switch n {
	case 1:
		close(p.first)
		<-p.queued
	case 2:
		close(p.second)
	}
	msgs, states, err := p.testPresigner.Presign(ctx, readings)
	if n == 1 && p.bloat {
		for i := range msgs {
			msgs[i].Encoded = bytes.Repeat([]byte{'x'}, bloatedLimit-200) // with its keys, beyond the limit
		}
	}
	return msgs, states, err
}

func (p *stagedPresigner) Committed(msgs []Signed, err error) {
	p.mu.Lock()
	p.commits++
	first := p.commits == 1
	p.order = append(p.order, "committed")
	p.mu.Unlock()
	if first && p.waitNext != nil && !p.waitNext() {
		p.mu.Lock()
		p.gaveUp = true
		p.mu.Unlock()
	}
	p.testPresigner.Committed(msgs, err)
}

// bloatedLimit is Badger's transaction size limit with 64 KiB memtables
// (15% of a memtable).
const bloatedLimit = 64 << 10 * 15 / 100

// runStaged runs a store with p's presigner and queues two readings of one
// chain as two batches: the second is queued while the first is being
// presigned. It returns the two readings' waits.
func runStaged(t *testing.T, opts Options, setup func(s *Store) *stagedPresigner) (*Store, *stagedPresigner, [2]func(context.Context) error) {
	t.Helper()
	opts.Dir, opts.MinFreeBytes = t.TempDir(), -1
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	p := setup(s)
	runWithPresigner(t, s, p)
	var waits [2]func(context.Context) error
	for i := range waits {
		if waits[i], err = s.Enqueue(reading(testPart, "client-1", `{"n":1}`), true); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-p.first
		}
	}
	close(p.queued)
	return s, p, waits
}

// TestPresignOverlapsCommit checks that the group committer signs the next
// batch while the previous batch's synced commit is in flight, rather than
// after it: the first batch's Committed waits for the second Presign,
// which on a committer that signs and commits in turn never comes.
func TestPresignOverlapsCommit(t *testing.T) {
	s, p, waits := runStaged(t, Options{}, func(s *Store) *stagedPresigner {
		p := newStagedPresigner(s)
		p.waitNext = func() bool {
			select {
			case <-p.second:
				return true
			case <-time.After(10 * time.Second): // not a timing assertion: the bound of a wait that never ends on a serial committer
				return false
			}
		}
		return p
	})
	for i, wait := range waits {
		if err := wait(context.Background()); err != nil {
			t.Fatalf("reading %d: %v", i+1, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gaveUp {
		t.Fatalf("the second batch was presigned only after the first was committed (calls %v)", p.order)
	}
	if p.committed != 2 || p.failed != 0 {
		t.Fatalf("presigner saw %d committed, %d failed; want 2, 0", p.committed, p.failed)
	}
	assertStored(t, s, 0, 2)
	assertChain(t, s)
}

// TestPresignedAfterTooLargeStoredPending checks the path where a batch in
// flight does not fit one transaction presigned: it is stored pending, and
// so is the next batch although it was presigned meanwhile (its messages
// would follow ones never stored); both are reported as not committed.
func TestPresignedAfterTooLargeStoredPending(t *testing.T) {
	// Small memtables make Badger's transaction limit small enough for one
	// message kept in the LSM tree (value threshold = the limit) to exceed.
	opts := Options{tune: func(bo badger.Options) badger.Options { return bo.WithMemTableSize(64 << 10) }, valueThreshold: bloatedLimit}
	s, p, waits := runStaged(t, opts, func(s *Store) *stagedPresigner {
		p := newStagedPresigner(s)
		p.bloat = true
		return p
	})
	for i, wait := range waits {
		if err := wait(context.Background()); err != nil {
			t.Fatalf("reading %d: %v", i+1, err)
		}
	}
	assertStored(t, s, 2, 0)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.committed != 0 || p.failed != 2 {
		t.Fatalf("presigner saw %d committed, %d failed; want 0, 2 (calls %v)", p.committed, p.failed, p.order)
	}
}

// assertChain checks that the stored messages of client-1 form one chain
// in log order.
func assertChain(t *testing.T, s *Store) {
	t.Helper()
	logged, err := s.After(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var last *streamr.MessageRef
	for _, l := range logged {
		m, err := streamr.Unmarshal(l.Encoded)
		if err != nil {
			t.Fatal(err)
		}
		if (last == nil) != (m.PrevMsgRef == nil) || (last != nil && m.PrevMsgRef.Compare(*last) != 0) {
			t.Fatalf("message at %d refers to %v, want %v", l.Pos, m.PrevMsgRef, last)
		}
		ref := streamr.MessageRef{Timestamp: m.ID.Timestamp, SequenceNumber: m.ID.SequenceNumber}
		last = &ref
	}
}
