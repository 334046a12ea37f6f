package systemd

import (
	"context"
	"log/slog"
	"time"
)

// Watchdog sends WATCHDOG=1 keep-alive pings to the service manager while the service is healthy.
// When Healthy reports an error the pings stop, so systemd kills the stalled process once WatchdogSec=
// passes and Restart=on-failure starts a fresh one.
type Watchdog struct {
	Interval time.Duration // systemd's timeout, pinged at half of it; zero means WatchdogInterval()
	Healthy  func() error  // checked before every ping, non-nil error withholds it; nil means always healthy
	Log      *slog.Logger  // nil discards the log
}

// RunWatchdog pings the service manager's watchdog at half the interval it asked for, but only while
// healthy returns nil. It returns nil when ctx ends, and at once when no watchdog is enabled for this
// process, so it can run unconditionally in the daemon's errgroup.
func RunWatchdog(ctx context.Context, healthy func() error, log *slog.Logger) error {
	w := Watchdog{Healthy: healthy, Log: log}
	return w.Run(ctx)
}

// Run pings until ctx ends; see RunWatchdog.
func (w *Watchdog) Run(ctx context.Context) error {
	log := w.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval := w.Interval
	if interval == 0 {
		var ok bool
		if interval, ok = WatchdogInterval(); !ok {
			log.Debug("systemd watchdog not enabled")
			return nil
		}
	}
	period := interval / 2
	log.Info("systemd watchdog enabled", "timeout", interval, "ping_every", period)

	ticker := time.NewTicker(period)
	defer ticker.Stop()
	var failing error // the health error while pings are withheld, to log transitions only once
	for {
		failing = w.tick(log, failing)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// tick runs one health check and pings when it passes. It returns the current health error.
func (w *Watchdog) tick(log *slog.Logger, failing error) error {
	if w.Healthy != nil {
		if err := w.Healthy(); err != nil {
			if failing == nil {
				log.Error("health check failed, withholding watchdog pings; systemd restarts the service if it persists", "err", err)
				if serr := Status("unhealthy: " + err.Error()); serr != nil {
					log.Warn("systemd status update failed", "err", serr)
				}
			}
			return err
		}
	}
	if failing != nil {
		log.Info("health check passes again, resuming watchdog pings", "was", failing)
		if serr := Status("healthy"); serr != nil {
			log.Warn("systemd status update failed", "err", serr)
		}
	}
	if err := Notify(StateWatchdog); err != nil {
		log.Warn("systemd watchdog ping failed", "err", err)
	}
	return nil
}
