package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/storage"
)

// BenchmarkSessionDelivery measures delivery into one connected persistent-session QoS 1
// consumer (MQTT 3.1.1, clean session 0), b.N messages of 200 bytes, as the gateway's
// Deliverer hands them to its broker: with durable queueing (Badger, synced group commits),
// without (sessions in memory), and mosquitto with `persistence true` fed by a QoS 1 publisher
// over loopback. scripts/bench-sessions.sh runs it; results in BENCHMARKS.md.
func BenchmarkSessionDelivery(b *testing.B) {
	payload := make([]byte, 200)
	for i := range payload {
		payload[i] = 'x'
	}
	b.Run("durable", func(b *testing.B) { benchOurs(b, true, payload) })
	b.Run("memory", func(b *testing.B) { benchOurs(b, false, payload) })
	b.Run("mosquitto", func(b *testing.B) { benchMosquitto(b, payload) })
}

func benchOurs(b *testing.B, durable bool, payload []byte) {
	cfg := broker.Config{Listeners: []broker.Listener{{Type: "tcp", Address: "127.0.0.1:0"}}, MaxInflight: 65534}
	if durable {
		st, err := storage.Open(storage.Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		cfg.Sessions = st
	}
	br, err := broker.New(cfg, nopHandler{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-br.Ready()
	got := benchConsumer(b, br.Addrs()[0].String())
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		mark := []byte(fmt.Sprint(i))
		if err := br.Publish("bench/x", payload, 1, broker.WithMark("bench", mark)); err != nil {
			b.Fatal(err)
		}
	}
	waitCount(b, got, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}

func benchMosquitto(b *testing.B, payload []byte) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin = "/usr/sbin/mosquitto"; !fileExists(bin) {
			b.Skip("mosquitto not installed (scripts/bench-sessions.sh installs it)")
		}
	}
	dir := b.TempDir()
	addr := freeAddr(b)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 0\nmax_inflight_messages 0\n", port, dir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitDial(b, addr)
	got := benchConsumer(b, addr)
	pub := connect(b, addr, "bench-publisher")
	defer pub.Disconnect(0)
	b.ResetTimer()
	start := time.Now()
	window := make(chan mqtt.Token, 64) // in-flight QoS 1 PUBLISHes, as the Deliverer never waits
	for range b.N {
		if len(window) == cap(window) {
			(<-window).Wait()
		}
		window <- pub.Publish("bench/x", 1, false, payload)
	}
	waitCount(b, got, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}

// benchConsumer opens a persistent session subscribed to bench/# and counts what it gets.
func benchConsumer(b *testing.B, addr string) *atomic.Int64 {
	var n atomic.Int64
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench-consumer").
		SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("consumer connect: %v", tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(0) })
	if tok := c.Subscribe("bench/#", 1, func(mqtt.Client, mqtt.Message) { n.Add(1) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("consumer subscribe: %v", tok.Error())
	}
	return &n
}

func waitCount(b *testing.B, n *atomic.Int64, want int) {
	deadline := time.Now().Add(5 * time.Minute)
	for n.Load() < int64(want) {
		if time.Now().After(deadline) {
			b.Fatalf("consumer got %d of %d", n.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

type nopHandler struct{}

func (nopHandler) HandlePublish(context.Context, *broker.Message) broker.Verdict {
	return broker.Verdict{Code: broker.Success}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitDial waits until addr accepts TCP connections.
func waitDial(b *testing.B, addr string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	b.Fatalf("%s not listening", addr)
}

// freeAddr returns a 127.0.0.1 address with a port free right now, for a
// process that cannot bind port 0 and report it (mosquitto).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
