package broker

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/wsock"
)

// TestSlowSubscriberNeverBlocksPublishers repeats the attack of issue #13: a subscriber to "#"
// with keepalive 0 that never reads. Publishers must keep getting their PUBACKs, a reading
// subscriber keeps receiving, and the slow one is disconnected once (counted, logged once),
// whether its backlog overflows first or a write times out first.
func TestSlowSubscriberNeverBlocksPublishers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		reason string
	}{
		{"buffer overflows", Config{MaxClientBuffer: 64 << 10, WriteTimeout: time.Minute}, "outbound buffer full"},
		{"write times out", Config{MaxClientBuffer: 64 << 20, WriteTimeout: 500 * time.Millisecond}, "write timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, tc.cfg, &testHandler{durable: true})
			addr := b.tcpAddr()
			slow := dialRawSmallBuffer(t, addr)
			pk := slow.connectPacket("slow", "", "")
			pk.Connect.Keepalive = 0
			if slow.connect(pk) != 0 || slow.subscribe("#", 1) != 1 {
				t.Fatal("slow subscriber not set up")
			}
			reader := subscribeV3(t, dialV3(t, "tcp://"+addr, "reader", nil), "s/#", 0)
			pub := dialV3(t, "tcp://"+addr, "pub", nil)

			payload := strings.Repeat("x", 16<<10)
			var worst time.Duration
			const n = 1000 // 16 MB: far beyond what the sockets of the slow subscriber buffer
			for i := range n {
				start := time.Now()
				if tok := pub.Publish("s/1", 1, false, payload); !tok.WaitTimeout(4*waitTimeout) || tok.Error() != nil {
					t.Fatalf("publish %d of %d: no PUBACK within %s (%v): the publisher is blocked", i, n, 4*waitTimeout, tok.Error())
				}
				worst = max(worst, time.Since(start))
				select {
				case <-reader:
				case <-time.After(waitTimeout):
					t.Fatalf("reading subscriber starved at message %d", i)
				}
			}
			t.Logf("worst PUBACK latency over %d publishes of 16 KiB with a stalled subscriber: %s", n, worst)
			// The write-timeout cut comes WriteTimeout after the flusher's last write started.
			deadline := time.Now().Add(waitTimeout)
			for b.Stats().Refused["slow_client"] == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := b.Stats().Refused["slow_client"]; n != 1 {
				t.Errorf("slow_client counted %d times, want 1", n)
			}
			logs := b.logs.String()
			if c := strings.Count(logs, "does not read what it is sent"); c != 1 || !strings.Contains(logs, tc.reason) {
				t.Errorf("slow client logged %d times (want 1, reason %q):\n%s", c, tc.reason, logs)
			}
			// Its connection is closed: reading it to the end ends in EOF or reset.
			_ = slow.conn.SetReadDeadline(time.Now().Add(waitTimeout))
			for {
				if _, err := slow.r.Read(make([]byte, 64<<10)); err != nil {
					if isTimeout(err) {
						t.Fatal("slow subscriber still connected")
					}
					break
				}
			}
		})
	}
}

// dialRawSmallBuffer connects an MQTT 3.1.1 raw client whose socket receive buffer is fixed at
// 4 KiB before the handshake (no autotuning), so that what it does not read backs up at once.
func dialRawSmallBuffer(t *testing.T, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, conn: c, r: bufio.NewReader(c), version: 4}
}

// TestShutdownWithStalledSubscribers stops a broker while several subscribers that never read
// hold a backlog: each connection gets at most closeFlush to take its last bytes, all at once,
// so shutdown does not grow with their number.
func TestShutdownWithStalledSubscribers(t *testing.T) {
	logs := &logBuffer{}
	b, err := New(Config{Listeners: []Listener{{Type: "tcp", Address: "127.0.0.1:0"}}, MaxClientBuffer: 64 << 20},
		&testHandler{durable: true}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-b.Ready()
	addr := b.Addrs()[0].String()
	const stalled = 8
	for i := range stalled {
		rc := dialRawSmallBuffer(t, addr)
		if rc.connect(rc.connectPacket(fmt.Sprintf("stalled-%d", i), "", "")) != 0 || rc.subscribe("#", 0) != 0 {
			t.Fatal("stalled subscriber not set up")
		}
	}
	pub := dialV3(t, "tcp://"+addr, "pub", nil)
	payload := strings.Repeat("x", 64<<10)
	for range 200 { // 12.8 MB per subscriber: far more than its socket takes
		publishV3(t, pub, "s/1", 0, false, payload)
	}
	pub.Disconnect(0)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(stalled * closeFlush):
		t.Fatalf("shutdown with %d stalled subscribers takes more than %s", stalled, stalled*closeFlush)
	}
	t.Logf("shutdown with %d stalled subscribers took %s", stalled, time.Since(start).Round(time.Millisecond))
}

// TestSlowWebSocketSubscriberCutOff: write_timeout holds over WebSocket too. Before wsock,
// the broker set deadlines on the socket under gorilla/websocket, which replaced them with
// its own (none) on every frame, so a WebSocket subscriber that stopped reading held its
// connection and buffer forever.
func TestSlowWebSocketSubscriberCutOff(t *testing.T) {
	b := startBroker(t, Config{
		Listeners:       []Listener{{Type: "tcp", Address: "127.0.0.1:0"}, {Type: "ws", Address: "127.0.0.1:0"}},
		MaxClientBuffer: 64 << 20, WriteTimeout: 500 * time.Millisecond,
	}, &testHandler{durable: true})
	tcpAddr, wsAddr := b.Addrs()[0].String(), b.Addrs()[1].String()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, err := wsock.Dial(ctx, "ws://"+wsAddr, nil, wsock.Options{Subprotocols: []string{"mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	stream := wsock.NewStream(ws)
	t.Cleanup(func() { _ = stream.Close() })
	slow := &rawConn{t: t, conn: stream, r: bufio.NewReader(stream), version: 4}
	pk := slow.connectPacket("slow-ws", "", "")
	pk.Connect.Keepalive = 0
	if slow.connect(pk) != 0 || slow.subscribe("#", 1) != 1 {
		t.Fatal("slow WebSocket subscriber not set up")
	}
	pub := dialV3(t, "tcp://"+tcpAddr, "pub", nil)
	payload := strings.Repeat("x", 16<<10)
	deadline := time.Now().Add(4 * waitTimeout)
	for i := 0; b.Stats().Refused["slow_client"] == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("WebSocket subscriber that reads nothing still connected after %d publishes of 16 KiB", i)
		}
		if tok := pub.Publish("s/1", 1, false, payload); !tok.WaitTimeout(4*waitTimeout) || tok.Error() != nil {
			t.Fatalf("publish %d: no PUBACK (%v): the publisher is blocked", i, tok.Error())
		}
	}
	if logs := b.logs.String(); !strings.Contains(logs, "write timed out") {
		t.Errorf("slow WebSocket client cut for another reason:\n%s", logs)
	}
}
