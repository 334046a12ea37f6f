package systemd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// notifyListener is a stand-in for the service manager's notification socket.
type notifyListener struct {
	t    *testing.T
	conn *net.UnixConn
	addr string
}

// listenNotify binds a datagram socket (abstract when abstract is true), points NOTIFY_SOCKET at it
// and returns it.
func listenNotify(t *testing.T, abstract bool) *notifyListener {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		addr = "@tributary-test-" + strconv.Itoa(os.Getpid()) + "-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %q: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv(envNotifySocket, addr)
	return &notifyListener{t: t, conn: conn, addr: addr}
}

// next returns the next datagram, failing the test after 10 s.
func (l *notifyListener) next() string {
	l.t.Helper()
	buf := make([]byte, 4096)
	if err := l.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		l.t.Fatal(err)
	}
	n, err := l.conn.Read(buf)
	if err != nil {
		l.t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySends(t *testing.T) {
	tests := []struct {
		name     string
		abstract bool
		send     func() error
		want     string
	}{
		{"ready on path socket", false, Ready, "READY=1"},
		{"stopping on path socket", false, Stopping, "STOPPING=1"},
		{"ready on abstract socket", true, Ready, "READY=1"},
		{"status flattens newlines", false, func() error { return Status("a\nb") }, "STATUS=a b"},
		{"several assignments", true, func() error { return Notify("READY=1\nSTATUS=up") }, "READY=1\nSTATUS=up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listenNotify(t, tt.abstract)
			if err := tt.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			if got := l.next(); got != tt.want {
				t.Errorf("received %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotifyErrors(t *testing.T) {
	tests := []struct {
		name    string
		socket  string
		wantErr string // empty: Notify must return nil
	}{
		{"unset is a no-op", "", ""},
		{"relative path", "run/notify", "only absolute paths"},
		{"vsock address", "vsock:2:1234", "only absolute paths"},
		{"missing socket", filepath.Join(t.TempDir(), "absent.sock"), "connect to NOTIFY_SOCKET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envNotifySocket, tt.socket)
			err := Ready()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Ready() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Ready() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name    string
		usec    string
		pid     string
		want    time.Duration
		enabled bool
	}{
		{"unset", "", "", 0, false},
		{"for this process", "30000000", self, 30 * time.Second, true},
		{"no pid given", "500000", "", 500 * time.Millisecond, true},
		{"for another process", "30000000", "1", 0, false},
		{"zero", "0", self, 0, false},
		{"not a number", "30s", self, 0, false},
		{"negative", "-5", self, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envWatchdogUsec, tt.usec)
			t.Setenv(envWatchdogPID, tt.pid)
			got, ok := WatchdogInterval()
			if got != tt.want || ok != tt.enabled {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tt.want, tt.enabled)
			}
		})
	}
}
