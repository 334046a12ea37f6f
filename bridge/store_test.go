package bridge

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// captureOverlay hands the deliver function of each Join to the test.
type captureOverlay struct {
	mu       sync.Mutex
	delivers []func(*streamr.StreamMessage, []byte)
}

func (o *captureOverlay) Join(_ streamr.StreamPartID, deliver func(*streamr.StreamMessage, []byte)) (Topic, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.delivers = append(o.delivers, deliver)
	return nil, nil
}

func (o *captureOverlay) deliver(m *streamr.StreamMessage, enc []byte) {
	o.mu.Lock()
	deliver := o.delivers[0]
	o.mu.Unlock()
	deliver(m, enc)
}

// TestStorerPositionsAreReceipts: what a Storer stores is what the store
// acknowledges as receipts, whatever name the caller gave its Orderer (the
// key used to be a convention between main and storage).
func TestStorerPositionsAreReceipts(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := NewStorer(store, OrderConfig{Name: "renamed", FromChainStart: true, FlushInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, slog.New(slog.DiscardHandler))
	msgs := chainMessages(3)
	part := msgs[0].ID.StreamPart()
	ov := &captureOverlay{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx, ov, []streamr.StreamPartID{part}); err != nil {
			t.Error(err)
		}
	})
	defer wg.Wait()
	defer cancel()
	<-s.Joined()
	for _, m := range msgs {
		enc, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ov.deliver(m, enc)
	}
	want := streamr.ChainReceipt{ChainID: msgs[2].ID.MsgChainID, Last: msgs[2].ID.Ref()}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rs, err := store.Receipts(part, msgs[0].ID.PublisherID)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 1 && rs[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Receipts = %v, want [%v]", rs, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
