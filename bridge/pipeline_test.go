package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testGateway is a pipeline with real storage and a real broker on
// 127.0.0.1, wired as cmd/bridge wires them.
type testGateway struct {
	pipeline *Pipeline
	store    *storage.Store
	broker   *broker.Broker
	metrics  *Metrics
	addr     string
}

type gatewayOptions struct {
	signer    streamr.Signer
	clock     Clock
	hold      bool
	quota     int64
	rules     []RuleConfig
	usersFile string
}

func startTestGateway(t *testing.T, o gatewayOptions) *testGateway {
	t.Helper()
	if o.signer == nil {
		k, err := streamr.GenerateEVMKey()
		if err != nil {
			t.Fatal(err)
		}
		o.signer = k
	}
	if o.rules == nil {
		o.rules = []RuleConfig{{Topic: "#", Stream: "{address}/{topic}"}}
	}
	store, err := storage.Open(storage.Options{Dir: t.TempDir(), QuotaBytes: o.quota, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	rules := make([]*Rule, len(o.rules))
	for i, rc := range o.rules {
		if rules[i], err = Compile(rc, i); err != nil {
			t.Fatal(err)
		}
	}
	g := &testGateway{store: store, metrics: NewMetrics(prometheus.NewRegistry())}
	g.pipeline, err = New(Config{
		Rules: rules, Signer: o.signer, Log: store, Clock: o.clock, HoldUnsynced: o.hold,
		Metrics: g.metrics, Logger: slog.New(slog.DiscardHandler), PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.broker, err = broker.New(broker.Config{
		Listeners: []broker.Listener{{Type: "tcp", Address: "127.0.0.1:0"}},
		UsersFile: o.usersFile,
	}, testHandler{g.pipeline}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return store.Run(ctx) })
	eg.Go(func() error { return g.pipeline.Run(ctx) })
	eg.Go(func() error { return g.broker.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := eg.Wait(); err != nil {
			t.Error(err)
		}
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-g.broker.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("broker not ready")
	}
	g.addr = g.broker.Addrs()[0].String()
	return g
}

// testHandler adapts the pipeline to the broker, as cmd/bridge does.
type testHandler struct{ p *Pipeline }

func (h testHandler) HandlePublish(_ context.Context, m *broker.Message) broker.Verdict {
	props := map[string]string{}
	for _, p := range m.UserProperties {
		props[p.Key] = p.Value
	}
	wait, r := h.p.Ingest(Publish{ClientID: m.ClientID, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, UserProperties: props})
	if r != nil {
		return broker.Verdict{Code: broker.ReasonCode(r.Code)}
	}
	return broker.Verdict{Code: broker.Success, Wait: wait}
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

func connect311(t *testing.T, addr, clientID string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
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
	c := connect311(t, g.addr, "sensor-1")
	const n = 25
	for i := range n {
		tok := c.Publish("slow/data", 1, false, fmt.Sprintf(`{"i":%d}`, i))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
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
	c := connect311(t, g.addr, "sensor-1")
	for i := range 3 {
		if tok := c.Publish("held/data", 1, false, fmt.Sprintf(`{"i":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
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

// Every rejection reaches an MQTT 5 client as its PUBACK reason code, and
// is counted by reason.
func TestRejectionReasonsMQTT5(t *testing.T) {
	g := startTestGateway(t, gatewayOptions{rules: []RuleConfig{
		{Topic: "ok/+", Stream: "{address}/ok/{1}"},
		{Topic: "bad/+", Stream: "{address}/bad/{1}"},
	}})
	client := connect5(t, g.addr)
	tests := []struct {
		topic, payload string
		code           byte
		label          string
	}{
		{"ok/a", `{"v":1}`, 0x00, ""},
		{"nothing/a", `{"v":1}`, 0x90, "no_rule"},
		{"bad/a b", `{"v":1}`, 0x90, "invalid_stream_id"},
		{"ok/a", `[1]`, 0x99, "invalid_json"},
	}
	for _, tc := range tests {
		resp, err := client.Publish(t.Context(), &paho5.Publish{Topic: tc.topic, QoS: 1, Payload: []byte(tc.payload)})
		var code byte
		if err == nil {
			code = resp.ReasonCode
		} else if resp != nil {
			code = resp.ReasonCode
		}
		if code != tc.code {
			t.Errorf("%s %s: reason 0x%02x (err %v), want 0x%02x", tc.topic, tc.payload, code, err, tc.code)
		}
		if tc.label != "" && testutil.ToFloat64(g.metrics.rejected.WithLabelValues(tc.label)) < 1 {
			t.Errorf("%s not counted", tc.label)
		}
	}
}

// MQTT 3.1.1 has no negative PUBACK: a refused reading is dropped (not
// stored, not delivered to subscribers) and counted.
func TestRejectionMQTT311Dropped(t *testing.T) {
	g := startTestGateway(t, gatewayOptions{rules: []RuleConfig{{Topic: "ok/#", Stream: "{address}/{topic}"}}})
	sub := connect311(t, g.addr, "watcher")
	got := make(chan string, 10)
	if tok := sub.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := connect311(t, g.addr, "sensor")
	for _, topic := range []string{"nope/x", "ok/x"} {
		if tok := pub.Publish(topic, 1, false, `{"v":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	select {
	case topic := <-got:
		if topic != "ok/x" {
			t.Fatalf("subscriber received refused topic %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("accepted reading not delivered")
	}
	if v := testutil.ToFloat64(g.metrics.rejected.WithLabelValues("no_rule")); v != 1 {
		t.Fatalf("no_rule counted %v times, want 1", v)
	}
}

func connect5(t *testing.T, addr string) *paho5.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: "v5-client", Conn: conn, PacketTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: "v5-client", KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatalf("MQTT 5 connect: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho5.Disconnect{})
		<-c.Done()
	})
	return c
}

// At the storage quota an MQTT 5 publisher gets reason 0x97, QoS 0 is
// refused too, and every reading acknowledged before is kept and signed.
func TestQuotaExceeded(t *testing.T) {
	g := startTestGateway(t, gatewayOptions{quota: 2 << 20})
	client := connect5(t, g.addr)
	filler := strings.Repeat("x", 1000)
	acked := 0
	var refused bool
	for i := 0; i < 10_000 && !refused; i++ {
		payload := fmt.Sprintf(`{"i":%d,"fill":%q}`, i, filler)
		resp, err := client.Publish(t.Context(), &paho5.Publish{Topic: "quota/data", QoS: 1, Payload: []byte(payload)})
		switch {
		case err == nil:
			acked++
		case resp != nil && resp.ReasonCode == 0x97:
			refused = true
		default:
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if !refused {
		t.Fatalf("no 0x97 after %d readings of 1 kB with a 2 MiB quota", acked)
	}
	if _, err := client.Publish(t.Context(), &paho5.Publish{Topic: "quota/data", QoS: 0, Payload: []byte(`{"qos":0}`)}); err != nil {
		t.Fatal(err)
	}
	address := streamr.UserID(g.pipeline.cfg.Signer.PublisherID())
	part := streamr.StreamPartID{Stream: streamr.StreamID(address + "/quota/data")}
	msgs := g.waitSigned(t, part, acked)
	if len(msgs) != acked {
		t.Fatalf("%d messages stored, %d readings acknowledged", len(msgs), acked)
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(g.metrics.rejected.WithLabelValues("quota_exceeded")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the QoS 0 reading over quota was not refused and counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
