package systemd

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunWatchdogWithoutWatchdogReturnsAtOnce(t *testing.T) {
	listenNotify(t, false)
	t.Setenv(envWatchdogUsec, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // RunWatchdog must not depend on cancellation to return
	if err := RunWatchdog(ctx, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("RunWatchdog = %v, want nil", err)
	}
}

func TestRunWatchdogReadsIntervalFromEnvironment(t *testing.T) {
	l := listenNotify(t, false)
	t.Setenv(envWatchdogUsec, "20000")
	t.Setenv(envWatchdogPID, strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx, func() error { return nil }, nil) }()
	for range 3 {
		if got := l.next(); got != StateWatchdog {
			t.Fatalf("received %q, want %q", got, StateWatchdog)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunWatchdog after cancel = %v, want nil", err)
	}
}

// TestWatchdogWithholdsPingsWhileUnhealthy drives a watchdog through healthy, stalled and recovered
// phases and checks the order of what reaches the notification socket: no WATCHDOG=1 may arrive
// between the "unhealthy" and the "healthy" status lines, however many checks ran in between.
func TestWatchdogWithholdsPingsWhileUnhealthy(t *testing.T) {
	l := listenNotify(t, true)
	var stalled atomic.Bool
	checks := make(chan struct{}, 100)
	w := Watchdog{
		Interval: 20 * time.Millisecond,
		Healthy: func() error {
			checks <- struct{}{}
			if stalled.Load() {
				return errors.New("pipeline stalled")
			}
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	expect := func(want string) {
		t.Helper()
		if got := l.next(); got != want {
			t.Fatalf("received %q, want %q", got, want)
		}
	}
	expect(StateWatchdog)
	expect(StateWatchdog)

	stalled.Store(true)
	for got := l.next(); got != "STATUS=unhealthy: pipeline stalled"; got = l.next() {
		if got != StateWatchdog { // a ping whose check ran before the stall is fine
			t.Fatalf("received %q while waiting for the unhealthy status", got)
		}
	}
	drain(checks)
	for range 5 { // five more failed checks, i.e. 2.5 watchdog intervals without a ping
		<-checks
	}
	stalled.Store(false)
	expect("STATUS=healthy")
	expect(StateWatchdog)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

func drain(c chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func TestWatchdogKeepsRunningWhenPingsFail(t *testing.T) {
	t.Setenv(envNotifySocket, "/nonexistent/notify.sock")
	var logged strings.Builder
	checks := make(chan struct{}, 100)
	w := Watchdog{
		Interval: 10 * time.Millisecond,
		Healthy:  func() error { checks <- struct{}{}; return nil },
		Log:      slog.New(slog.NewTextHandler(&logged, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for range 3 {
		<-checks
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if !strings.Contains(logged.String(), "watchdog ping failed") {
		t.Errorf("log does not mention the failed ping:\n%s", logged.String())
	}
}
