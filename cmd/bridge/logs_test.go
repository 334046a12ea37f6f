package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/gateway"
)

// JSON logs print addresses as host:port, not as the structs' fields.
func TestJSONLogAddresses(t *testing.T) {
	var buf bytes.Buffer
	log, closeLog := newLogger(gateway.LogConfig{Level: "info", Format: "json"}, &buf)
	defer closeLog()
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883}
	log.Info("gateway ready", "mqtt", []net.Addr{tcp, &net.UDPAddr{IP: net.IPv6loopback, Port: 4001}}, "remote", net.Addr(tcp))
	var line struct {
		MQTT   []string `json:"mqtt"`
		Remote string   `json:"remote"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if strings.Join(line.MQTT, " ") != "127.0.0.1:1883 [::1]:4001" || line.Remote != "127.0.0.1:1883" {
		t.Fatalf("addresses logged as %s", buf.String())
	}
}

// A gateway warns at start when the clock is not synchronised and ends its
// log with a line saying it stopped.
func TestRunLogsClockAndStop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	in := newInstance(t, "")
	in.start()
	in.stop()
	logs := strings.TrimSpace(in.logs())
	lines := strings.Split(logs, "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, `msg="gateway stopped"`) {
		t.Errorf("last log line %q, want the gateway stopped line", last)
	}
	sync, err := bridge.ReadClockSync()
	if err != nil {
		t.Skipf("clock sync state: %v", err)
	}
	if warned := strings.Contains(logs, "system clock is not synchronised"); warned == sync.Synced {
		t.Errorf("clock synced %v, warned %v", sync.Synced, warned)
	}
}

// A run that fails logs why as its last line, and main does not print it
// a second time.
func TestRunFailureLoggedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	ln, err := net.Listen("tcp", anyPort) // the MQTT port is taken
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	in := newInstance(t, "")
	in.setMQTT(ln.Addr().String())
	_, stderr, code := runBridge("run", "--config", in.config)
	if code != 1 {
		t.Fatalf("exit %d with the MQTT port taken:\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, `msg="gateway stopped"`) || !strings.Contains(last, "err=") {
		t.Errorf("last line %q, want the gateway stopped line with the error", last)
	}
	if strings.Contains(stderr, "bridge: ") {
		t.Errorf("error printed twice:\n%s", stderr)
	}
}
