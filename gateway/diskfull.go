package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/statuspage"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/systemd"
)

// diskPoll is how often a gateway refusing for a full disk looks again.
const diskPoll = 5 * time.Second

// refuseUntilSpace runs while the disk is too full to open storage: the
// broker answers every reading with 0x97 (MQTT 5 quota exceeded; 3.1.1
// clients are disconnected), /healthz reports the disk and systemd sees a
// live service rather than a crash loop. It returns nil once the disk has
// room again (or ctx ends).
func refuseUntilSpace(ctx context.Context, cfg *Config, log *slog.Logger, cause error) error {
	log.Error("disk full at start-up: refusing readings until space is freed", "err", cause, "retry", diskPoll)
	reg := prometheus.NewRegistry()
	b, err := broker.New(brokerConfig(cfg, reg), refuseAll{}, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.Run(ctx) })
	if cfg.HTTP.Address != "" {
		g.Go(func() error { return serveRefusingHTTP(ctx, cfg, reg, log, b, cause) })
	}
	g.Go(func() error {
		select {
		case <-ctx.Done():
			return nil
		case <-b.Ready():
		}
		if err := systemd.Ready(); err != nil {
			log.Warn("sd_notify READY failed", "err", err)
		}
		return systemd.RunWatchdog(ctx, func() error { return nil }, log)
	})
	g.Go(func() error {
		defer cancel()
		t := time.NewTicker(diskPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if err := storage.CheckFree(storageDir(cfg), minFreeBytes(cfg)); !errors.Is(err, storage.ErrDiskFull) {
				log.Info("disk has room again: starting storage", "err", err)
				return nil
			}
		}
	})
	return g.Wait()
}

// serveRefusingHTTP serves /metrics, /healthz failing with the disk
// error, and the status page saying so, while storage is closed.
func serveRefusingHTTP(ctx context.Context, cfg *Config, reg *prometheus.Registry, log *slog.Logger, b *broker.Broker, cause error) error {
	started := time.Now()
	pages, err := statuspage.New(statuspage.Config{
		Source: func(context.Context) statuspage.Status {
			return statuspage.Status{
				UptimeSeconds: time.Since(started).Seconds(),
				Health:        statuspage.Health{State: "fault", Error: cause.Error()},
				Clock:         statuspage.Clock{Policy: cfg.Signing.OnUnsyncedClock},
				MQTT:          statuspage.MQTT{Clients: int(b.Stats().ClientsConnected), Listeners: addrStrings(b.Addrs())},
				Storage:       statuspage.Storage{QuotaBytes: int64(cfg.Storage.Quota)},
				Partitions:    []statuspage.Partition{},
				Nodes:         []statuspage.Node{},
				Orderers:      []statuspage.Orderer{},
			}
		},
		Interval: time.Duration(cfg.HTTP.StatusInterval), MaxStreams: cfg.HTTP.MaxStatusStreams,
		WriteTimeout: time.Duration(cfg.HTTP.WriteTimeout), Logger: log,
	})
	if err != nil {
		return fmt.Errorf("status page: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Address)
	if err != nil {
		return fmt.Errorf("http.address %s: %w", cfg.HTTP.Address, err)
	}
	hcfg := cfg.httpServerConfig(reg, log)
	hcfg.Health = func() error { return cause }
	hcfg.Pages = pages.Handler()
	srv, err := bridge.NewHTTPServer(ln, hcfg)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("http.address %s: %w", cfg.HTTP.Address, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pages.Run(ctx) })
	g.Go(func() error { return srv.Serve(ctx) })
	return g.Wait()
}

// refuseAll refuses every reading: there is nowhere to store it.
type refuseAll struct{}

func (refuseAll) HandlePublish(context.Context, *broker.Message) broker.Verdict {
	return broker.Verdict{Code: broker.QuotaExceeded}
}
