package systemd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables set by the service manager (see sd_notify(3) and sd_watchdog_enabled(3)).
const (
	envNotifySocket = "NOTIFY_SOCKET"
	envWatchdogUsec = "WATCHDOG_USEC"
	envWatchdogPID  = "WATCHDOG_PID"
)

// Notification states understood by systemd.
const (
	StateReady    = "READY=1"
	StateStopping = "STOPPING=1"
	StateWatchdog = "WATCHDOG=1"
)

// Notify sends state (one or more newline-separated VAR=value assignments) to the service manager's
// notification socket named in $NOTIFY_SOCKET. It does nothing and returns nil when the variable is
// unset, that is when the process does not run as a Type=notify service. A name starting with '@' is
// an abstract socket.
func Notify(state string) error {
	path := os.Getenv(envNotifySocket)
	if path == "" {
		return nil
	}
	if path[0] != '/' && path[0] != '@' {
		return fmt.Errorf("systemd: %s=%q: only absolute paths and abstract sockets are supported", envNotifySocket, path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd: connect to %s %q: %w", envNotifySocket, path, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("systemd: send %q to %s %q: %w", firstLine(state), envNotifySocket, path, err)
	}
	return nil
}

// Ready tells the service manager that start-up is complete. systemd holds back units ordered after
// bridge.service, and `systemctl start` returns, only once this has been sent.
func Ready() error { return Notify(StateReady) }

// Stopping tells the service manager that a graceful shutdown has begun.
func Stopping() error { return Notify(StateStopping) }

// Status sets the free-form status line that `systemctl status` shows.
func Status(text string) error {
	return Notify("STATUS=" + strings.ReplaceAll(text, "\n", " "))
}

// WatchdogInterval reports the watchdog timeout the service manager enforces (WatchdogSec= in the unit),
// and whether a watchdog is enabled for this process at all. The service must send WATCHDOG=1 more often
// than the returned interval; RunWatchdog does so at half of it.
func WatchdogInterval() (time.Duration, bool) {
	usec := os.Getenv(envWatchdogUsec)
	if usec == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 {
		return 0, false
	}
	// WATCHDOG_PID names the process that must ping; a child that inherited the environment must not.
	if pid := os.Getenv(envWatchdogPID); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(n) * time.Microsecond, true
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
