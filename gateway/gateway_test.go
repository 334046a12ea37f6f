package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/bridge"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testGateway is a gateway running in the test process, built from a
// config file as `bridge run` builds it.
type testGateway struct {
	*Gateway
	logs *syncBuffer
	stop func() error // cancels Run and returns its error
}

// loopback keeps a test gateway's overlay on 127.0.0.1 with a random TCP
// port and no LAN discovery.
const loopback = `[overlay]
listen = ["/ip4/127.0.0.1/tcp/0"]
mdns = false
nat = false
retry = "200ms"
`

// newTestGateway writes a config (MQTT on a random loopback port, HTTP
// off, extra appended, loopback added unless extra has an [overlay]
// table) and returns the gateway New made of it.
func newTestGateway(t testing.TB, extra string) *testGateway {
	t.Helper()
	dir := t.TempDir()
	content := fmt.Sprintf("state_dir = %q\nstop_timeout = \"5s\"\n[log]\nlevel = \"debug\"\n[[mqtt.listener]]\ntype = \"tcp\"\naddress = \"127.0.0.1:0\"\n[http]\naddress = \"\"\n%s",
		filepath.Join(dir, "state"), extra)
	if !strings.Contains(extra, "[overlay]") {
		content += "\n" + loopback
	}
	if !strings.Contains(extra, "[websocket]") {
		content += "\n[websocket]\naddress = \"\"\n" // its default port would collide between gateways
	}
	path := filepath.Join(dir, "bridge.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	g, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return &testGateway{Gateway: g, logs: logs}
}

// run starts Run and stops it at the end of the test, failing the test if
// Run failed. It returns once the gateway is ready.
func (g *testGateway) run(t testing.TB) {
	t.Helper()
	done := g.start()
	t.Cleanup(func() {
		if err := g.stop(); err != nil {
			t.Errorf("Run: %v\n%s", err, g.logs)
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		done <- err // for the cleanup's stop, which waits for Run's result
		t.Fatalf("Run returned before ready: %v\n%s", err, g.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway not ready after 30s\n%s", g.logs)
	}
}

// start runs Run in the background; the channel gets its result, and
// whoever takes it puts it back for stop.
func (g *testGateway) start() chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	var err error
	g.stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
			done <- err
		})
		return err
	}
	return done
}

func (g *testGateway) mqttAddr(t testing.TB) string {
	t.Helper()
	addrs := g.MQTTAddrs()
	if len(addrs) == 0 {
		t.Fatal("no MQTT listener")
	}
	return addrs[0].String()
}

// bootstrap is an overlay table bootstrapping from g.
func (g *testGateway) bootstrap(t *testing.T) string {
	t.Helper()
	addrs := g.Identity().Addrs
	if len(addrs) == 0 {
		t.Fatal("gateway has no overlay address")
	}
	return strings.Replace(loopback, "[overlay]\n", fmt.Sprintf("[overlay]\nbootstrap = [%q]\n", addrs[0]), 1)
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func connect(t *testing.T, addr, clientID string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// A reading published with a real MQTT client on gateway A arrives, signed
// by A, on gateway B's local MQTT through the overlay, once for each of
// B's two subscriptions of the stream, in order: both gateways in this
// process, every part as `bridge run` assembles it.
func TestTwoGateways(t *testing.T) {
	a := newTestGateway(t, "")
	a.run(t)
	addrA := a.Identity().Publisher
	b := newTestGateway(t, a.bootstrap(t)+fmt.Sprintf(`
[[subscribe]]
stream = "%[1]s/e2e/data"
topic = "from-overlay/{publisher}"
metadata = true
[[subscribe]]
stream = "%[1]s/e2e/data"
topic = "again/{publisher}"
metadata = true
`, addrA))
	b.run(t)

	type delivery struct {
		topic string
		n     int
	}
	got := make(chan delivery, 100)
	sub := connect(t, b.mqttAddr(t), "consumer")
	for _, filter := range []string{"from-overlay/#", "again/#"} {
		tok := sub.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			var e struct {
				Content  struct{ N int }
				Metadata struct {
					PublisherID string `json:"publisherId"`
				}
			}
			if err := json.Unmarshal(m.Payload(), &e); err != nil {
				t.Errorf("payload %s: %v", m.Payload(), err)
			}
			if e.Metadata.PublisherID != addrA {
				t.Errorf("message from %q, want gateway A %s", e.Metadata.PublisherID, addrA)
			}
			got <- delivery{strings.SplitN(m.Topic(), "/", 2)[0], e.Content.N}
		})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	pub := connect(t, a.mqttAddr(t), "sensor")
	const n = 20
	for i := range n {
		if tok := pub.Publish("e2e/data", 1, false, fmt.Sprintf(`{"n":%d}`, i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	next := map[string]int{} // per subscription, the reading expected next
	deadline := time.After(30 * time.Second)
	for range 2 * n {
		select {
		case d := <-got:
			if d.n != next[d.topic] {
				t.Fatalf("%s: delivery %d is reading %d: out of order or duplicated", d.topic, next[d.topic], d.n)
			}
			next[d.topic]++
		case <-deadline:
			t.Fatalf("gateway B delivered %v of %d readings per subscription\nB:\n%s", next, n, b.logs)
		}
	}
	select {
	case d := <-got:
		t.Fatalf("extra delivery of reading %d on %s", d.n, d.topic)
	case <-time.After(300 * time.Millisecond):
	}
}

// failingCursor is storage whose forwarder cursor cannot be read, once
// release is closed (at once if it is nil).
type failingCursor struct {
	bridge.ForwardLog
	err     error
	release <-chan struct{}
}

func (f failingCursor) Cursor(string) (uint64, error) {
	if f.release != nil {
		<-f.release
	}
	return 0, f.err
}

// A part of the gateway that fails in the background stops Run with its
// error (so systemd restarts the gateway), whether it is behind the broker
// (the forwarder's first cursor read) or beside it (the status LED).
func TestFailingPartStopsRun(t *testing.T) {
	broken := errors.New("cursor unreadable")
	for _, tc := range []struct {
		name  string
		extra string
		fault func(*Gateway)
		want  string
	}{
		{"forwarder", "", func(g *Gateway) {
			g.forwardLog = func(l bridge.ForwardLog) bridge.ForwardLog { return failingCursor{l, broken, nil} }
		}, broken.Error()},
		{"status LED", "[status]\nled_pin = \"NO-SUCH-PIN\"\n", nil, "status.led_pin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t, tc.extra)
			if tc.fault != nil {
				tc.fault(g.Gateway)
			}
			var err error
			select {
			case err = <-g.start():
			case <-time.After(30 * time.Second):
				t.Fatalf("Run still running 30s after the part failed\n%s", g.logs)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run returned %v, want the part's error %q\n%s", err, tc.want, g.logs)
			}
			if tc.fault != nil && !errors.Is(err, broken) {
				t.Errorf("Run's error %v does not wrap the part's", err)
			}
		})
	}
}

// A part failing after READY=1 stops the watchdog's pings at once: the
// gateway tells systemd STOPPING=1, pings no more, and Run returns the
// part's error.
func TestWatchdogReflectsFailedPart(t *testing.T) {
	dir, err := os.MkdirTemp("", "wd") // a socket path must stay short
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", sock.LocalAddr().String())
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "")
	states := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				close(states)
				return
			}
			states <- string(buf[:n])
		}
	}()

	broken := errors.New("cursor unreadable")
	release := make(chan struct{})
	g := newTestGateway(t, "")
	g.forwardLog = func(l bridge.ForwardLog) bridge.ForwardLog { return failingCursor{l, broken, release} }
	done := g.start()
	waitState(t, states, "READY=1")
	waitState(t, states, "WATCHDOG=1")
	close(release)
	waitState(t, states, "STOPPING=1")
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("Run still running after the part failed\n%s", g.logs)
	}
	if !errors.Is(err, broken) {
		t.Fatalf("Run returned %v, want the forwarder's error", err)
	}
	sock.Close()
	for state := range states {
		if strings.Contains(state, "WATCHDOG=1") {
			t.Errorf("watchdog pinged after STOPPING=1")
		}
	}
}

// waitState reads notifications until one holds want.
func waitState(t *testing.T, states <-chan string, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-states:
			if strings.Contains(s, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s notification", want)
		}
	}
}

// health is what the watchdog and /healthz check: a failed part makes it
// fail while the gateway drains.
func TestHealthReportsFailedPart(t *testing.T) {
	ctx, fail := context.WithCancelCause(context.Background())
	cause := errors.New("forwarder: broken")
	fail(cause)
	if err := (&system{}).health(ctx); !errors.Is(err, cause) {
		t.Fatalf("health %v, want the failed part's error", err)
	}
}

// New refuses what LoadConfig would, and Run runs once.
func TestNewAndRunOnce(t *testing.T) {
	cfg := defaultConfig()
	cfg.StopTimeout = 0
	if _, err := New(&cfg, Options{}); err == nil || !strings.Contains(err.Error(), "stop_timeout") {
		t.Fatalf("New with stop_timeout 0: %v", err)
	}
	cfg = defaultConfig()
	cfg.Overlay.Enabled = false
	if _, err := New(&cfg, Options{BootstrapNode: true}); err == nil || !strings.Contains(err.Error(), "overlay.enabled") {
		t.Fatalf("bootstrap node without overlay: %v", err)
	}
	g := newTestGateway(t, "")
	g.run(t)
	if err := g.Run(t.Context()); err == nil {
		t.Fatal("second Run succeeded")
	}
}
