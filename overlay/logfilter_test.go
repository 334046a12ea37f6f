package overlay

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A gateway without peers fails to advertise each topic every two
// minutes: the first failure is logged at info, repeats at debug until
// the error changes or an hour passes; delivery tag misses are debug.
func TestQuietPubsub(t *testing.T) {
	var buf bytes.Buffer
	f := quietPubsub(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).(*pubsubFilter)
	now := time.Unix(1_700_000_000, 0)
	f.now = func() time.Time { return now }
	log := slog.New(f).With("component", "pubsub")
	noPeers := errors.New("failed to find any peer in table")
	rendezvous := func(topic string, err error) {
		log.Warn("bootstrap: error providing rendezvous for topic", "topic", topic, "err", err)
	}
	for range 30 { // an hour of retries, two minutes apart
		rendezvous("t1", noPeers)
		now = now.Add(2 * time.Minute)
	}
	rendezvous("t2", noPeers)
	rendezvous("t1", errors.New("context deadline exceeded"))
	now = now.Add(time.Hour)
	rendezvous("t1", errors.New("context deadline exceeded"))
	for range 500 {
		log.Warn("error bumping delivery tag", "err", "no decaying tag registered for topic t1")
	}
	log.Warn("something else")

	out := buf.String()
	if n := strings.Count(out, "error providing rendezvous"); n != 4 {
		t.Errorf("%d rendezvous lines, want 4 (t1 first, t2 first, t1 new error, t1 an hour later):\n%s", n, out)
	}
	if strings.Contains(out, "level=WARN msg=\"bootstrap") || strings.Contains(out, "bumping delivery tag") {
		t.Errorf("routine pubsub complaints above debug:\n%s", out)
	}
	if !strings.Contains(out, `level=WARN msg="something else" component=pubsub`) {
		t.Errorf("other warnings must pass unchanged:\n%s", out)
	}
}
