package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultLogRepeatInterval is how often one kind of repeated log line is written at most.
const DefaultLogRepeatInterval = 10 * time.Second

// rateLog writes log lines of one kind (a key such as message and reason, never a client- or
// topic-specific value, so that the number of keys stays small) at most once per interval; a
// line written after a quiet spell carries how many were suppressed meanwhile. A client
// retrying refused readings in a tight loop thus costs a line per interval, not one per packet.
type rateLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*rateEntry
}

type rateEntry struct {
	last       time.Time
	suppressed uint64
}

func newRateLog(log *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{log: log, interval: interval, now: time.Now, keys: map[string]*rateEntry{}}
}

// allow reports whether a line of kind key may be written now, and how many were suppressed
// since the last one.
func (r *rateLog) allow(key string) (bool, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	e := r.keys[key]
	if e == nil {
		r.keys[key] = &rateEntry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < r.interval {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// Warn writes msg at warn level unless a line of kind key was written within the interval.
func (r *rateLog) Warn(key, msg string, args ...any) { r.write(slog.LevelWarn, key, msg, args...) }

// Error is Warn at error level.
func (r *rateLog) Error(key, msg string, args ...any) { r.write(slog.LevelError, key, msg, args...) }

func (r *rateLog) write(level slog.Level, key, msg string, args ...any) {
	ok, suppressed := r.allow(key)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	r.log.Log(context.Background(), level, msg, args...)
}

// maxLogValue bounds client-supplied strings (topics, client IDs, refusal details) in log lines.
const maxLogValue = 256

// clip shortens s to maxLogValue bytes for a log line, marking the cut.
func clip(s string) string {
	if len(s) <= maxLogValue {
		return s
	}
	return s[:maxLogValue] + "…"
}

// mochiHandler passes mochi's log lines on without packet contents (mochi logs whole packets,
// sensor payloads included, e.g. "error processing packet" at server.go:585, at any size a
// client sends) and at most one line per message per interval (a client can make mochi log
// one line per packet it sends).
type mochiHandler struct {
	slog.Handler
	min     slog.Leveler
	limiter *rateLog
}

// packetKeys are the attribute keys under which mochi logs packets and Wills.
var packetKeys = map[string]bool{"pk": true, "packet": true, "will": true, "pkv": true}

func (h mochiHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.Handler.Enabled(ctx, l)
}

func (h mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.limiter.allow(r.Message)
	if !ok {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		switch {
		case packetKeys[a.Key]:
			out.AddAttrs(slog.String(a.Key, "(omitted)"))
		case a.Value.Kind() == slog.KindString:
			out.AddAttrs(slog.String(a.Key, clip(a.Value.String())))
		default:
			out.AddAttrs(a)
		}
		return true
	})
	if suppressed > 0 {
		out.AddAttrs(slog.Uint64("suppressed", suppressed))
	}
	return h.Handler.Handle(ctx, out)
}

func (h mochiHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return mochiHandler{h.Handler.WithAttrs(attrs), h.min, h.limiter}
}

func (h mochiHandler) WithGroup(name string) slog.Handler {
	return mochiHandler{h.Handler.WithGroup(name), h.min, h.limiter}
}
