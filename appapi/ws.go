package appapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/wsock"
)

// Log is the store a subscriber reads: history by time, then the log of
// every stored message in commit order; storage.Store satisfies it.
type Log interface {
	bridge.History
	After(pos uint64, max int) ([]storage.Logged, error)
	LastPos() uint64
}

// WSConfig configures the WebSocket interface.
type WSConfig struct {
	Publish PublishConfig
	Log     Log  // required for subscribe
	Keys    Keys // zero: no key needed
	// Decrypter decrypts encrypted content for subscribers (the gateway's
	// key exchange); nil: encrypted messages are not sent.
	Decrypter bridge.Decrypter
	// PayloadMetadata reads and writes {"content":…,"metadata":{…}}.
	PayloadMetadata bool
	// AllowedOrigins are browser origins (scheme://host[:port]) allowed
	// besides loopback ones; "*" allows any.
	AllowedOrigins    []string
	PingInterval      time.Duration // 0: DefaultPingInterval; negative: no server pings
	DisconnectTimeout time.Duration // 0: DefaultDisconnectTimeout
	WriteTimeout      time.Duration // 0: DefaultWSWriteTimeout
	MaxConnections    int           // 0: DefaultMaxConnections
	MaxResend         int           // 0: DefaultMaxResend
	PollInterval      time.Duration // how often subscribers look for new messages unwoken (default 250ms)
}

func (c *WSConfig) setDefaults() error {
	if err := c.Publish.setDefaults(); err != nil {
		return err
	}
	if c.Log == nil {
		return errors.New("appapi: WSConfig.Log is required")
	}
	setDefault(&c.PingInterval, DefaultPingInterval)
	setDefault(&c.DisconnectTimeout, DefaultDisconnectTimeout)
	setDefault(&c.WriteTimeout, DefaultWSWriteTimeout)
	setDefault(&c.MaxConnections, DefaultMaxConnections)
	setDefault(&c.MaxResend, DefaultMaxResend)
	setDefault(&c.PollInterval, 250*time.Millisecond)
	if c.MaxConnections < 0 || c.MaxResend < 0 || c.WriteTimeout < 0 || c.DisconnectTimeout < 0 {
		return errors.New("appapi: websocket limits must not be negative")
	}
	return nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// WSServer is the Streamr node's WebSocket plugin on one listener.
type WSServer struct {
	cfg      WSConfig
	ln       net.Listener
	upgrader *wsock.Upgrader
	hosts    map[string]bool // Host values a loopback listener accepts; nil: any
	conns    chan struct{}   // open connections
	m        *Metrics
	log      *slog.Logger
	logs     *bridge.LogLimiter
	wake     *broadcast

	wg     sync.WaitGroup // connection handlers
	ctx    context.Context
	cancel context.CancelFunc
}

// NewWSServer serves the WebSocket interface on ln. A listener reachable
// beyond loopback needs keys.
func NewWSServer(ln net.Listener, cfg WSConfig) (*WSServer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("websocket: listener address %s is not TCP", ln.Addr())
	}
	if !addr.IP.IsLoopback() && !cfg.Keys.Enabled() {
		return nil, fmt.Errorf("websocket on %s: reachable beyond loopback without API keys: listen on 127.0.0.1 or set api.keys", addr)
	}
	log := cfg.Publish.Logger.With("component", "app_websocket")
	s := &WSServer{
		cfg:   cfg,
		ln:    ln,
		conns: make(chan struct{}, cfg.MaxConnections),
		m:     cfg.Publish.Metrics,
		log:   log,
		logs:  bridge.NewLogLimiter(log, time.Minute),
		wake:  newBroadcast(),
	}
	if addr.IP.IsLoopback() {
		s.hosts = loopbackHosts(addr)
	}
	s.upgrader = wsock.NewUpgrader(wsock.Options{ReadLimit: cfg.Publish.MaxBody, WriteTimeout: cfg.WriteTimeout}, s.originAllowed)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Notify tells subscribers that new messages are stored (a commit).
func (s *WSServer) Notify() { s.wake.signal() }

// Serve answers connections until ctx ends, then closes every connection
// (close code 1001) and waits for their handlers.
func (s *WSServer) Serve(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done:
		}
		s.cancel()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			_ = srv.Close()
		}
	}()
	s.log.Info("websocket interface listening", "address", s.ln.Addr().String())
	err := srv.Serve(s.ln)
	close(done)
	<-stopped
	s.wg.Wait()
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("websocket: %w", err)
	}
	return nil
}

// ServeHTTP checks a connection request (path, Host, API key, the
// connection limit) and hands the upgraded connection to its action.
func (s *WSServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.hosts != nil && !s.hosts[strings.ToLower(r.Host)] {
		s.refuse(w, http.StatusMisdirectedRequest, "host", "Host "+truncate(r.Host, 64)+" is not this gateway's loopback address")
		return
	}
	action, id, err := parseWSPath(r.URL)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := s.cfg.Keys.CheckRequest(r); err != nil {
		s.refuse(w, status(err), "auth", err.Error())
		return
	}
	var conn connection
	switch action {
	case "publish":
		conn, err = s.newPublisher(r.URL.Query(), id)
	default:
		conn, err = s.newSubscriber(r.URL.Query(), id)
	}
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	select {
	case s.conns <- struct{}{}:
	default:
		w.Header().Set("Retry-After", "1")
		s.refuse(w, http.StatusServiceUnavailable, "max_connections",
			fmt.Sprintf("too many WebSocket connections (websocket.max_connections = %d)", cap(s.conns)))
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		<-s.conns
		s.m.refused.WithLabelValues(ifaceWS, "handshake").Inc()
		s.logs.Warn("handshake", "websocket handshake failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.conns }()
		s.m.conns.WithLabelValues(action).Inc()
		defer s.m.conns.WithLabelValues(action).Dec()
		s.run(ws, conn)
	}()
}

func (s *WSServer) refuse(w http.ResponseWriter, status int, reason, msg string) {
	s.m.refused.WithLabelValues(ifaceWS, reason).Inc()
	s.logs.Warn(reason, "websocket connection refused", "reason", reason, "detail", msg)
	writeError(w, status, msg)
}

// connection is one side of the interface: a publisher or a subscriber.
type connection interface {
	// serve runs until the connection ends; reads belong to it.
	serve(ctx context.Context, c *wsock.Conn) error
}

// run serves one connection with server pings, and closes it.
func (s *WSServer) run(c *wsock.Conn, conn connection) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	if s.cfg.PingInterval > 0 {
		go func() { _ = c.KeepAlive(ctx, s.cfg.PingInterval, s.cfg.DisconnectTimeout) }()
	}
	err := conn.serve(ctx, c)
	code, reason := closeFor(ctx, err)
	var dropped *dropError
	if errors.As(err, &dropped) {
		s.m.dropped.WithLabelValues(dropped.reason).Inc()
		s.logs.Warn("drop_"+dropped.reason, "websocket connection dropped", "remote", c.RemoteAddr().String(), "reason", dropped.reason, "err", dropped.err)
	}
	_ = c.CloseWith(code, reason)
}

// dropError is a connection the gateway ends, with the metric's reason.
type dropError struct {
	reason string
	err    error
}

func (e *dropError) Error() string { return e.reason + ": " + e.err.Error() }

func closeFor(ctx context.Context, err error) (int, string) {
	var d *dropError
	switch {
	case ctx.Err() != nil && err == nil:
		return wsock.CloseGoingAway, "gateway stopping"
	case errors.Is(err, wsock.ErrReadLimit):
		return wsock.CloseMessageTooBig, "message larger than api.max_message_size"
	case errors.As(err, &d) && d.reason == "slow":
		return wsock.ClosePolicyViolation, "subscriber too slow: resume with from="
	case errors.As(err, &d):
		return wsock.CloseInternalError, truncate(d.Error(), 100)
	}
	return wsock.CloseNormal, ""
}

// parseWSPath reads /streams/<url-encoded stream ID>/publish|subscribe (the
// ID may also hold raw slashes, as the node's pattern allows).
func parseWSPath(u *url.URL) (string, string, error) {
	p := u.EscapedPath()
	rest, ok := strings.CutPrefix(p, "/streams/")
	if !ok {
		return "", "", fmt.Errorf("path %q: want /streams/<stream ID>/publish or /subscribe", truncate(u.Path, 200))
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", "", fmt.Errorf("path %q: want /streams/<stream ID>/publish or /subscribe", truncate(u.Path, 200))
	}
	action := rest[i+1:]
	if action != "publish" && action != "subscribe" {
		return "", "", fmt.Errorf("path %q: action %q: want publish or subscribe", truncate(u.Path, 200), truncate(action, 40))
	}
	id, err := parseStreamID(rest[:i])
	if err != nil {
		return "", "", err
	}
	return action, string(id), nil
}

// originAllowed admits clients without an Origin (not browsers), pages
// from loopback origins, and the configured ones.
func (s *WSServer) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHosts lists the Host values that name a loopback listener.
func loopbackHosts(addr *net.TCPAddr) map[string]bool {
	port := fmt.Sprint(addr.Port)
	hosts := map[string]bool{}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", addr.IP.String()} {
		hosts[net.JoinHostPort(h, port)] = true
	}
	return hosts
}

// newSource names a connection's message chain.
func newSource() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "ws/" + hex.EncodeToString(b[:])
}

// broadcast wakes every waiter at once.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

func (b *broadcast) signal() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// wait returns a channel closed at the next signal.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}
