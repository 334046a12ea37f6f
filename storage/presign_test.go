package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tributary-iot/tributary/streamr"
)

// testPresigner signs like the crash child's signer, keeping its chains in
// memory, unless declining.
type testPresigner struct {
	s *Store

	mu        sync.Mutex
	chains    map[string]*streamr.Chain
	decline   bool
	fail      error // returned by Presign
	committed int   // messages reported committed
	bytes     int64 // their encoded size
	failed    int   // commits reported failed
}

func (p *testPresigner) Presign(_ context.Context, readings []Reading) ([]Signed, map[string]streamr.ChainState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.decline || p.fail != nil {
		return nil, nil, p.fail
	}
	msgs, states := childSign(p.s, readings, p.chains)
	return msgs, states, nil
}

func (p *testPresigner) Committed(msgs []Signed, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.failed++
		return
	}
	p.committed += len(msgs)
	for _, m := range msgs {
		p.bytes += int64(len(m.Encoded))
	}
}

func (p *testPresigner) set(decline bool, fail error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.decline, p.fail = decline, fail
}

// runningPresigned is running with a testPresigner set before Run.
func runningPresigned(t *testing.T, dir string) (*Store, *testPresigner) {
	t.Helper()
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPresigner{s: s, chains: map[string]*streamr.Chain{}}
	runWithPresigner(t, s, p)
	return s, p
}

// runWithPresigner sets p as s's presigner and runs s until the test ends.
func runWithPresigner(t *testing.T, s *Store, p Presigner) {
	s.SetPresigner(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = s.Close()
	})
}

// TestPresignWritesSignedOnly checks that presigned readings are stored as
// signed messages with their chain states, never as pending readings, and
// that readings the presigner declines or fails on are stored pending, after
// which presigning waits until the pending readings are signed.
func TestPresignWritesSignedOnly(t *testing.T) {
	dir := t.TempDir()
	s, p := runningPresigned(t, dir)
	appendAll(t, s, 10, payloadN)
	assertStored(t, s, 0, 10)
	if p.committed != 10 {
		t.Fatalf("presigner saw %d committed, want 10", p.committed)
	}
	_, ok, err := s.ChainState(testPart.String() + "\x00client-1")
	if err != nil || !ok {
		t.Fatalf("chain state of presigned readings: ok=%v err=%v", ok, err)
	}

	p.set(true, nil)
	appendAll(t, s, 3, payloadN)
	p.set(false, errors.New("signer unplugged"))
	appendAll(t, s, 2, payloadN)
	p.set(false, nil)
	appendAll(t, s, 4, payloadN) // pending readings exist: stored pending too
	assertStored(t, s, 9, 10)

	pend, err := s.Pending(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock() // the background signer shares the presigner's chains
	msgs, states := childSign(s, pend, p.chains)
	p.mu.Unlock()
	if err := s.CommitSigned(context.Background(), msgs, states); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, 5, payloadN) // nothing pending again: presigned
	assertStored(t, s, 0, 24)
	if p.committed != 15 {
		t.Fatalf("presigner saw %d committed, want 15", p.committed)
	}
}

// assertStored checks the numbers of pending readings and signed messages.
func assertStored(t *testing.T, s *Store, pending, signed int) {
	t.Helper()
	pend, err := s.Pending(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	logged, err := s.After(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != pending || len(logged) != signed {
		t.Fatalf("stored %d pending and %d signed, want %d and %d", len(pend), len(logged), pending, signed)
	}
}

// TestSigningBatchFitsTransaction checks that a signing batch of 256
// messages just below the value threshold (the largest kept in the LSM
// tree), each on its own chain, fits one transaction: otherwise signing
// would stall on such readings.
func TestSigningBatchFitsTransaction(t *testing.T) {
	s := running(t, Options{MinFreeBytes: -1})
	pend := make([]Reading, 256)
	for i := range pend {
		r := reading(testPart, fmt.Sprintf("sensor-with-a-long-client-id-%03d", i), "")
		for {
			sm, err := buildSigned(*r, 1, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(sm.Encoded)+logHeaderLen >= valueThreshold-1 {
				break
			}
			r.Payload = append(r.Payload, 'x')
		}
		if err := s.Append(context.Background(), r, true); err != nil {
			t.Fatal(err)
		}
		pend[i] = *r
	}
	chains := map[string]*streamr.Chain{}
	msgs, states := childSign(s, pend, chains)
	if err := s.CommitSigned(context.Background(), msgs, states); err != nil {
		t.Fatalf("commit 256 messages of %d bytes on 256 chains: %v", len(msgs[0].Encoded), err)
	}
}
