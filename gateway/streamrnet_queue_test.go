package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/streamr"
)

// A full delivery queue makes the proxy's read wait, counted, instead of
// dropping; once the adapter has stopped nothing waits.
func TestStreamrNetDeliveryQueue(t *testing.T) {
	a := newStreamrNetAdapter(overlay.Config{}, 1, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	a.enqueue("0x00000000000000000000000000000000000000aa/q#0", []byte{1})
	waited := make(chan struct{})
	go func() {
		a.enqueue("0x00000000000000000000000000000000000000aa/q#0", []byte{2})
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("enqueue into a full queue did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	if got := testutil.ToFloat64(a.full); got != 1 {
		t.Fatalf("queue full counted %v times, want 1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	<-waited
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a.enqueue("0x00000000000000000000000000000000000000aa/q#0", []byte{3})
	a.enqueue("0x00000000000000000000000000000000000000aa/q#0", []byte{4}) // stopped: returns at once
}

// The key exchange sender returns at once, retries while no proxy has the
// partition (within its patience), and refuses what its queue cannot hold.
func TestKXSender(t *testing.T) {
	var calls atomic.Int32
	publish := func(_ context.Context, _ string, encoded [][]byte) (int, error) {
		if calls.Add(1) < 3 {
			return 0, streamr.ErrNoPeers
		}
		return len(encoded), nil
	}
	k := newKXSender(publish, 1, 5*time.Second, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	part, _ := streamr.ParseStreamPartID("0x00000000000000000000000000000000000000aa/kx#0")
	topic := k.topic(part)
	if n, err := topic.Publish(context.Background(), [][]byte{{1}}); n != 1 || err != nil {
		t.Fatalf("first Publish: %d, %v", n, err)
	}
	if _, err := topic.Publish(context.Background(), [][]byte{{2}}); !errors.Is(err, errKeyExchangeQueueFull) {
		t.Fatalf("Publish into a full queue: %v, want %v", err, errKeyExchangeQueueFull)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(k.results.WithLabelValues("sent")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("not sent after %d tries", calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(k.results.WithLabelValues("queue_full")); got != 1 || calls.Load() != 3 {
		t.Fatalf("queue_full %v, publish calls %d; want 1 and 3", got, calls.Load())
	}

	never := func(context.Context, string, [][]byte) (int, error) { return 0, streamr.ErrNoPeers }
	k = newKXSender(never, 1, 200*time.Millisecond, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	k.send(context.Background(), kxItem{part.String(), [][]byte{{1}}})
	if got := testutil.ToFloat64(k.results.WithLabelValues("failed")); got != 1 {
		t.Fatalf("a message no proxy takes counted failed %v times, want 1", got)
	}
}
