package overlay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestAskSlots: at most perPeer requests to one peer hold a slot; a
// waiter gives up when its context ends; other peers are not held back;
// an idle peer leaves no entry behind.
func TestAskSlots(t *testing.T) {
	a := newAskSlots(2)
	p, q := peer.ID("p"), peer.ID("q")
	r1, err1 := a.take(t.Context(), p)
	r2, err2 := a.take(t.Context(), p)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.take(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third take of p = %v, want it to wait until its deadline", err)
	}
	rq, err := a.take(t.Context(), q)
	if err != nil {
		t.Fatalf("take of another peer: %v", err)
	}
	rq()

	got := make(chan error, 1)
	go func() {
		r, err := a.take(t.Context(), p)
		if err == nil {
			r()
		}
		got <- err
	}()
	r1()
	if err := <-got; err != nil {
		t.Fatalf("take after a release: %v", err)
	}
	r2()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.peers) != 0 {
		t.Errorf("%d peer entries left after every release, want 0", len(a.peers))
	}
}
