package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testGateway is a pipeline with real storage, fed as the broker feeds
// it (see publish); the gateway package's tests run the whole assembly
// with a real broker and real MQTT clients.
type testGateway struct {
	pipeline *Pipeline
	store    *storage.Store
	metrics  *Metrics
}

type gatewayOptions struct {
	signer streamr.Signer
	clock  Clock
	hold   bool
}

func startTestGateway(t testing.TB, o gatewayOptions) *testGateway {
	t.Helper()
	if o.signer == nil {
		k, err := streamr.GenerateEVMKey()
		if err != nil {
			t.Fatal(err)
		}
		o.signer = k
	}
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	rule, err := Compile(RuleConfig{Topic: "#", Stream: "{address}/{topic}"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := &testGateway{store: store, metrics: NewMetrics(prometheus.NewRegistry())}
	g.pipeline, err = New(Config{
		Rules: []*Rule{rule}, Signer: o.signer, Log: store, Clock: o.clock, HoldUnsynced: o.hold,
		Metrics: g.metrics, Logger: slog.New(slog.DiscardHandler), PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return store.Run(ctx) })
	eg.Go(func() error { return g.pipeline.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := eg.Wait(); err != nil {
			t.Error(err)
		}
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	return g
}

// publish ingests one QoS 1 reading of client and returns once it is
// durable: when the broker would send its PUBACK.
func (g *testGateway) publish(ctx context.Context, client, topic, payload string) error {
	wait, reason := g.pipeline.Ingest(Publish{ClientID: client, Topic: topic, Payload: []byte(payload), QoS: 1})
	if reason != nil {
		return fmt.Errorf("publish %s: refused: %s", topic, reason.Label)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := wait(ctx); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// messages returns the stored signed messages of a stream partition.
func (g *testGateway) messages(t *testing.T, part streamr.StreamPartID) []*streamr.StreamMessage {
	t.Helper()
	var out []*streamr.StreamMessage
	err := g.store.Messages(part, 0, math.MaxInt64, func(b []byte) error {
		m, err := streamr.Unmarshal(bytes.Clone(b))
		out = append(out, m)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (g *testGateway) waitSigned(t *testing.T, part streamr.StreamPartID, n int) []*streamr.StreamMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msgs := g.messages(t, part)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages signed after 30s", len(msgs), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slowSigner signs like key but at most rate signatures per second,
// like a hardware secure element.
type slowSigner struct {
	*streamr.EVMKey
	interval time.Duration
	signed   atomic.Int64
}

func (s *slowSigner) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	select {
	case <-time.After(s.interval):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer s.signed.Add(1)
	return s.EVMKey.Sign(ctx, payload)
}

// A signer doing 5 signatures/s must not slow ingestion: every PUBACK
// arrives while most readings are still unsigned, and all are then signed
// in publish order with a contiguous chain.
func TestSlowSignerDoesNotSlowIngestion(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	signer := &slowSigner{EVMKey: key, interval: 200 * time.Millisecond}
	g := startTestGateway(t, gatewayOptions{signer: signer})
	const n = 25
	for i := range n {
		if err := g.publish(t.Context(), "sensor-1", "slow/data", fmt.Sprintf(`{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := signer.signed.Load(); s >= n/2 {
		t.Fatalf("%d of %d readings were already signed when the last PUBACK arrived: ingestion waited on the signer", s, n)
	}
	part := streamr.StreamPartID{Stream: streamr.StreamID(streamr.UserID(key.PublisherID()) + "/slow/data")}
	msgs := g.waitSigned(t, part, n)
	for i, m := range msgs {
		var body struct{ I int }
		if err := json.Unmarshal(m.Content().Content, &body); err != nil || body.I != i {
			t.Fatalf("message %d has content %s: out of order", i, m.Content().Content)
		}
		if err := streamr.Validate(m, 0, streamr.Limits{}); err != nil {
			t.Fatal(err)
		}
		if i > 0 && *m.PrevMsgRef != msgs[i-1].ID.Ref() {
			t.Fatalf("message %d: prev %s, want %s", i, m.PrevMsgRef, msgs[i-1].ID.Ref())
		}
	}
}

// fakeClock is a controllable Clock.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	boot   int64
	synced bool
}

func (c *fakeClock) Now() time.Time   { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) BootNanos() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.boot }
func (c *fakeClock) Synced() bool     { c.mu.Lock(); defer c.mu.Unlock(); return c.synced }

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.boot += int64(d)
}

// The hold policy keeps readings durable but unsigned while the clock is
// unsynchronised, then signs them in order with times derived from the
// boot clock.
func TestHoldUntilClockSynced(t *testing.T) {
	wrong := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) // a Pi booting without RTC
	clock := &fakeClock{now: wrong, boot: int64(10 * time.Second)}
	g := startTestGateway(t, gatewayOptions{clock: clock, hold: true})
	for i := range 3 {
		if err := g.publish(t.Context(), "sensor-1", "held/data", fmt.Sprintf(`{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
	}
	address := streamr.UserID(g.pipeline.cfg.Signer.PublisherID())
	part := streamr.StreamPartID{Stream: streamr.StreamID(address + "/held/data")}
	time.Sleep(200 * time.Millisecond) // ten poll intervals
	if msgs := g.messages(t, part); len(msgs) != 0 {
		t.Fatalf("%d messages signed while the clock is unsynchronised", len(msgs))
	}
	if v := testutil.ToFloat64(g.metrics.held); v != 1 {
		t.Fatalf("tributary_signing_held = %v, want 1", v)
	}
	// NTP steps the clock to the truth, 3 s after the first reading.
	truth := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clock.mu.Lock()
	clock.now, clock.synced = truth, true
	clock.mu.Unlock()
	msgs := g.waitSigned(t, part, 3)
	for i, m := range msgs {
		want := truth.Add(time.Duration(i-3) * time.Second).UnixMilli()
		if m.ID.Timestamp != want {
			t.Errorf("message %d dated %d, want %d (from the boot clock)", i, m.ID.Timestamp, want)
		}
		var body struct{ I int }
		if err := json.Unmarshal(m.Content().Content, &body); err != nil || body.I != i {
			t.Errorf("message %d content %s: out of order", i, m.Content().Content)
		}
	}
	if v := testutil.ToFloat64(g.metrics.held); v != 0 {
		t.Errorf("tributary_signing_held = %v after sync, want 0", v)
	}
}
