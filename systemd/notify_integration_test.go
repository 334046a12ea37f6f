package systemd

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBridge compiles the real daemon from ../cmd/bridge into a temporary directory.
func buildBridge(t *testing.T) string {
	t.Helper()
	goTool := lookTool(t, "go")
	bin := filepath.Join(t.TempDir(), "bridge")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/bridge")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/bridge: %v\n%s", err, out)
	}
	return bin
}

// freePort reserves a loopback TCP port and releases it for the daemon to bind.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// mqttConnect performs an MQTT 3.1.1 CONNECT and reports whether the broker accepted it.
func mqttConnect(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	connect := []byte{
		0x10, 13, // CONNECT, remaining length
		0, 4, 'M', 'Q', 'T', 'T', 4, // protocol name and level 3.1.1
		0x02,  // clean session
		0, 30, // keep alive
		0, 1, 'n', // client ID
	}
	if _, err := conn.Write(connect); err != nil {
		return err
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if !bytes.Equal(connack, []byte{0x20, 2, 0, 0}) {
		return fmt.Errorf("CONNACK % x, want 20 02 00 00", connack)
	}
	return nil
}

// TestBridgeNotifiesServiceManager runs the real bridge binary the way systemd runs a Type=notify
// service with WatchdogSec=: it must send READY=1 only when MQTT accepts connections, then keep
// sending WATCHDOG=1, and send STOPPING=1 after SIGTERM before exiting cleanly.
func TestBridgeNotifiesServiceManager(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the bridge binary")
	}
	bin := buildBridge(t)
	notify := listenNotify(t, false)
	dir := t.TempDir()
	mqttAddr := freePort(t)
	config := filepath.Join(dir, "bridge.toml")
	// The overlay stays on loopback with no LAN discovery: tests send
	// nothing beyond 127.0.0.1.
	body := fmt.Sprintf("state_dir = %q\n[http]\naddress = \"\"\n[websocket]\naddress = \"\"\n[[mqtt.listener]]\ntype = \"tcp\"\naddress = %q\n"+
		"[overlay]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nnat = false\ndht = false\n",
		filepath.Join(dir, "state"), mqttAddr)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}

	var stderr bytes.Buffer
	cmd := exec.Command(bin, "run", "--config", config)
	cmd.Env = append(os.Environ(),
		envNotifySocket+"="+notify.addr,
		envWatchdogUsec+"=400000", // pings expected every 200 ms
	)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("bridge stderr:\n%s", stderr.String())
		}
	}()

	// Nothing but READY=1 may come first, and when it arrives the MQTT port must already work.
	if got := notify.next(); got != StateReady {
		t.Fatalf("first notification %q, want %q", got, StateReady)
	}
	if err := mqttConnect(mqttAddr); err != nil {
		t.Fatalf("READY=1 received but MQTT on %s does not accept a connection: %v", mqttAddr, err)
	}
	for i := 0; i < 3; {
		got := notify.next()
		if strings.HasPrefix(got, "STATUS=") {
			continue
		}
		if got != StateWatchdog {
			t.Fatalf("notification %q after READY, want %q", got, StateWatchdog)
		}
		i++
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for got := notify.next(); got != StateStopping; got = notify.next() {
		if got != StateWatchdog && !strings.HasPrefix(got, "STATUS=") {
			t.Fatalf("notification %q while waiting for %q", got, StateStopping)
		}
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Fatalf("bridge exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bridge still running 30 s after SIGTERM")
	}
}
