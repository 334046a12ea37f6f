package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/tributary-iot/tributary/gateway"
	"github.com/tributary-iot/tributary/systemd"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	// Before anything slow: SIGHUP's default action would end the process.
	hangup := make(chan os.Signal, 1)
	signal.Notify(hangup, syscall.SIGHUP)
	defer signal.Stop(hangup)
	fs := newFlags("run", stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults)")
	bootstrapNode := fs.Bool("bootstrap-node", false, "serve as a bootstrap node for other bridges: DHT on, and log the addresses they can use")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if err := cfg.CheckFiles(*configPath); err != nil {
		return err
	}
	if *bootstrapNode && !cfg.Overlay.Enabled {
		return usageError{errors.New("run: --bootstrap-node needs overlay.enabled = true")}
	}
	log, closeLog := newLogger(cfg.Log, stderr)
	defer closeLog()
	if os.Getenv("GOMEMLIMIT") == "" && cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	}
	g, err := gateway.New(cfg, gateway.Options{Logger: log, Reload: hangup, BootstrapNode: *bootstrapNode, Version: version})
	if err != nil {
		return logStopped(log, err)
	}
	stopped := make(chan struct{})
	released := releaseOnceReady(g.Ready(), stopped, log)
	err = g.Run(ctx)
	close(stopped)
	<-released
	return logStopped(log, err)
}

// releaseOnceReady gives back the binary's pages that start-up alone
// touched once the gateway serves (broker, storage and overlay started:
// ~20 MB of the binary resident, of which the running gateway uses about
// half), unless stopped comes first. The returned channel is closed when it
// is done.
func releaseOnceReady(ready, stopped <-chan struct{}, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ready:
		case <-stopped:
			return
		}
		if n, err := releaseStartupText(); err != nil {
			log.Debug("start-up text not released", "err", err)
		} else {
			log.Debug("start-up text released", "bytes", n)
		}
	}()
	return done
}

// exitUnsigned is the exit status of a stop, or an export, that leaves
// stored readings unsigned.
const exitUnsigned = gateway.ExitUnsigned

// logStopped writes the last line of every run: that the gateway stopped,
// and why if it failed. main does not print the error again.
func logStopped(log *slog.Logger, err error) error {
	var unsigned *gateway.UnsignedError
	switch {
	case errors.As(err, &unsigned):
		log.Error("gateway stopped with stored readings unsigned", "unsigned", unsigned.Count,
			"reason", unsigned.Reason.Error(), "exit_status", exitUnsigned)
	case err != nil:
		log.Error("gateway stopped", "err", err, "exit_status", exitCode(err))
	default:
		log.Info("gateway stopped", "exit_status", 0)
		return nil
	}
	return loggedError{err}
}

// newLogger logs to journald's native protocol when systemd connected
// stderr to the journal (so attributes become searchable fields, e.g.
// journalctl -u bridge COMPONENT=overlay), else text or JSON to w.
func newLogger(c gateway.LogConfig, w io.Writer) (*slog.Logger, func()) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by LoadConfig
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: addrsAsText}
	if systemd.StderrIsJournal() {
		if h, err := systemd.NewJournalHandler(systemd.JournalSocket, opts); err == nil {
			return slog.New(h), func() { _ = h.Close() }
		}
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), func() {}
	}
	return slog.New(slog.NewTextHandler(w, opts)), func() {}
}
