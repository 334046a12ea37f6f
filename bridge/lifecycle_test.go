package bridge

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// joinOverlay is an Overlay whose Join fails with err (succeeds if nil).
type joinOverlay struct {
	fakeOverlay
	err error
}

func (o *joinOverlay) Join(part streamr.StreamPartID, deliver func(*streamr.StreamMessage, []byte)) (Topic, error) {
	if o.err != nil {
		return nil, o.err
	}
	return o.fakeOverlay.Join(part, deliver)
}

// nopBroker is a LocalBroker that keeps nothing.
type nopBroker struct{}

func (nopBroker) PublishMarked(string, []byte, byte, string, []byte) error { return nil }
func (nopBroker) Mark(string) ([]byte, bool, error)                        { return nil, false, nil }
func (nopBroker) Sync(context.Context) error                               { return nil }

// The Storer and the Deliverer start themselves in Run: it joins their
// stream partitions (Joined closes), runs their Orderer, and returns a
// failed join at once, with the Orderer stopped.
func TestStorerAndDelivererRun(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	sub, err := CompileSubscription(SubscribeConfig{Stream: streamr.UserID(key.PublisherID()) + "/life"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	order := OrderConfig{Name: "life", Positions: store, Logger: slog.New(slog.DiscardHandler)}
	type part interface {
		Joined() <-chan struct{}
	}
	parts := map[string]func(Overlay) (part, func(context.Context) error){
		"storer": func(o Overlay) (part, func(context.Context) error) {
			s := NewStorer(store, order, slog.New(slog.DiscardHandler))
			return s, func(ctx context.Context) error { return s.Run(ctx, o, sub.Parts()) }
		},
		"deliverer": func(o Overlay) (part, func(context.Context) error) {
			d := NewDeliverer(key.PublisherID(), nopBroker{}, NewOrderer(order), nil, slog.New(slog.DiscardHandler))
			return d, func(ctx context.Context) error { return d.Run(ctx, o, []*Subscription{sub}) }
		},
	}
	refused := errors.New("join refused")
	for name, build := range parts {
		t.Run(name+"/joins", func(t *testing.T) {
			p, run := build(&joinOverlay{})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- run(ctx) }()
			select {
			case <-p.Joined():
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not join")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run after cancel: %v", err)
			}
		})
		t.Run(name+"/join fails", func(t *testing.T) {
			p, run := build(&joinOverlay{err: refused})
			done := make(chan error, 1)
			go func() { done <- run(t.Context()) }()
			select {
			case err := <-done:
				if !errors.Is(err, refused) {
					t.Fatalf("Run returned %v, want the join's error", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return the failed join")
			}
			select {
			case <-p.Joined():
				t.Fatal("Joined closed after a failed join")
			default:
			}
		})
	}
}
