package overlay

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// pubsubRepeat is how long a repeated pubsub complaint stays at debug level.
const pubsubRepeat = time.Hour

// quietPubsub lowers go-libp2p-pubsub's routine complaints, which it logs
// as warnings on every retry: a gateway without peers cannot advertise its
// topics in the DHT (every two minutes, per topic), and messages that
// arrive for a topic just left find no delivery tag (hundreds during a
// drain). The first rendezvous failure of a topic, and any whose error
// changes, is logged at info; repeats within pubsubRepeat at debug. Other
// records pass unchanged.
func quietPubsub(next slog.Handler) slog.Handler {
	return &pubsubFilter{next: next, seen: &seenComplaints{last: map[string]complaint{}}, now: time.Now}
}

type pubsubFilter struct {
	next slog.Handler
	seen *seenComplaints
	now  func() time.Time
}

type seenComplaints struct {
	mu   sync.Mutex
	last map[string]complaint // topic → last complaint logged above debug
}

type complaint struct {
	err string
	at  time.Time
}

// maxSeen bounds the topics remembered; beyond it the memory starts over.
const maxSeen = 4096

func (f *pubsubFilter) Enabled(ctx context.Context, l slog.Level) bool { return f.next.Enabled(ctx, l) }

func (f *pubsubFilter) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "error bumping delivery tag":
		r.Level = slog.LevelDebug
	case "bootstrap: error providing rendezvous for topic":
		r.Level = f.rendezvousLevel(r)
	}
	if !f.next.Enabled(ctx, r.Level) {
		return nil
	}
	return f.next.Handle(ctx, r)
}

func (f *pubsubFilter) rendezvousLevel(r slog.Record) slog.Level {
	var topic, errText string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "topic":
			topic = a.Value.String()
		case "err":
			errText = a.Value.String()
		}
		return true
	})
	now := f.now()
	f.seen.mu.Lock()
	defer f.seen.mu.Unlock()
	last, ok := f.seen.last[topic]
	if ok && last.err == errText && now.Sub(last.at) < pubsubRepeat {
		return slog.LevelDebug
	}
	if len(f.seen.last) >= maxSeen {
		f.seen.last = map[string]complaint{}
	}
	f.seen.last[topic] = complaint{err: errText, at: now}
	return slog.LevelInfo
}

func (f *pubsubFilter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &pubsubFilter{next: f.next.WithAttrs(attrs), seen: f.seen, now: f.now}
}

func (f *pubsubFilter) WithGroup(name string) slog.Handler {
	return &pubsubFilter{next: f.next.WithGroup(name), seen: f.seen, now: f.now}
}
