package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/statuspage"
)

// validate checks the [http] table. An address reachable beyond loopback
// needs API keys ([api]) or allow_anonymous; the server checks the bound
// address again.
func (h HTTPConfig) validate(keys bool) error {
	var errs []error
	if h.Address != "" && !h.AllowAnonymous && !keys && !isLoopbackAddress(h.Address) {
		errs = append(errs, fmt.Errorf("http.address %q: reachable beyond loopback, and no API keys are set: "+
			"use 127.0.0.1 (or localhost, [::1]), set api.keys (or api.keys_file, api.keys_credential), or set http.allow_anonymous = true", h.Address))
	}
	if h.MaxRequests <= 0 || h.MaxQueries <= 0 {
		errs = append(errs, errors.New("http.max_requests and http.max_queries: must be positive"))
	}
	if h.ReadHeaderTimeout <= 0 || h.WriteTimeout <= 0 || h.IdleTimeout <= 0 {
		errs = append(errs, errors.New("http.read_header_timeout, http.write_timeout and http.idle_timeout: must be positive"))
	}
	if h.MaxStatusStreams <= 0 || h.StatusInterval <= 0 {
		errs = append(errs, errors.New("http.max_status_streams and http.status_interval: must be positive"))
	}
	return errors.Join(errs...)
}

// isLoopbackAddress reports whether host:port names only loopback: an IP
// literal of the loopback range or "localhost".
func isLoopbackAddress(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) httpServerConfig(reg *prometheus.Registry, log *slog.Logger) bridge.HTTPServerConfig {
	var gatherer prometheus.Gatherer = quietGatherer{reg}
	if c.HTTP.Libp2pZeroMetrics {
		gatherer = reg
	}
	return bridge.HTTPServerConfig{
		Gatherer:          gatherer,
		AllowAnonymous:    c.HTTP.AllowAnonymous,
		MaxRequests:       c.HTTP.MaxRequests,
		MaxQueries:        c.HTTP.MaxQueries,
		ReadHeaderTimeout: time.Duration(c.HTTP.ReadHeaderTimeout),
		WriteTimeout:      time.Duration(c.HTTP.WriteTimeout),
		IdleTimeout:       time.Duration(c.HTTP.IdleTimeout),
		Registerer:        reg,
		Logger:            log,
	}
}

// serveHTTP serves the HTTP API and the status page until ctx ends;
// /healthz fails once a part of the gateway has (failed is done).
func (s *system) serveHTTP(ctx, failed context.Context, pages *statuspage.Server) error {
	ln, err := net.Listen("tcp", s.cfg.HTTP.Address)
	if err != nil {
		return fmt.Errorf("http.address %s: %w", s.cfg.HTTP.Address, err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		s.httpAddr.Store(a)
	}
	hcfg := s.cfg.httpServerConfig(s.reg, s.log)
	hcfg.History, hcfg.Receipts = s.store, s.receipts
	if s.node != nil {
		hcfg.History = peerHistory{s.store, s.node}
	}
	hcfg.Health = func() error { return s.health(failed) }
	hcfg.Identity = func() any { return s.identity() }
	if err := s.addAppRoutes(&hcfg); err != nil {
		_ = ln.Close()
		return err
	}
	if s.cfg.HTTP.DebugPprof {
		addDebugRoutes(hcfg.Routes)
	}
	if s.e2ee != nil {
		hcfg.Rekey, hcfg.Decrypter = s.rekey, s.e2ee
	}
	hcfg.Pages = pages.Handler()
	srv, err := bridge.NewHTTPServer(ln, hcfg)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("http.address %s: %w", s.cfg.HTTP.Address, err)
	}
	return srv.Serve(ctx)
}

// newStatusPage builds the status page's server, sampling the gateway's
// facts every http.status_interval.
func (s *system) newStatusPage(failed context.Context) (*statuspage.Server, error) {
	pages, err := statuspage.New(statuspage.Config{
		Source:       func(context.Context) statuspage.Status { return s.statusFacts(failed) },
		Interval:     time.Duration(s.cfg.HTTP.StatusInterval),
		MaxStreams:   s.cfg.HTTP.MaxStatusStreams,
		WriteTimeout: time.Duration(s.cfg.HTTP.WriteTimeout),
		Registerer:   s.reg,
		Logger:       s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("status page: %w", err)
	}
	return pages, nil
}
