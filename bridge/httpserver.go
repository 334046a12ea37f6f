package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero HTTPServerConfig fields.
const (
	DefaultHTTPMaxRequests       = 32
	DefaultHTTPMaxQueries        = 4
	DefaultHTTPReadHeaderTimeout = 5 * time.Second
	DefaultHTTPWriteTimeout      = 30 * time.Second
	DefaultHTTPIdleTimeout       = 60 * time.Second
)

// HTTPServerConfig configures the HTTP API: what it serves, and the limits
// that keep a hostile or clumsy local client from exhausting the gateway.
type HTTPServerConfig struct {
	History  History             // answers resend queries
	Gatherer prometheus.Gatherer // /metrics
	Health   func() error        // /healthz: 200 while it returns nil
	Receipts *Receipts           // /receipts
	Identity func() any          // /identity as JSON (the gateway's publisher and overlay IDs); nil: not served
	// Routes are more handlers by ServeMux pattern (the app API's publish
	// endpoint), behind the same guard.
	Routes map[string]http.Handler
	// Authenticate, when set, must pass for every request but /healthz;
	// it answers the refusal itself and reports false. A listener reachable
	// beyond loopback needs it (or AllowAnonymous).
	Authenticate func(w http.ResponseWriter, r *http.Request) bool
	// Rekey replaces a stream's group key (POST /streams/{id}/rekey, from
	// loopback only; `bridge stream rekey`) and returns the new key's ID;
	// nil: not served.
	Rekey func(ctx context.Context, stream string) (string, error)
	// Decrypter decrypts encrypted content for format=object resends
	// (format=raw stays ciphertext); nil: such messages are left out.
	Decrypter Decrypter
	// Pages serves GET /, /assets/, /status and /status/events (the
	// status page); nil: not served.
	Pages http.Handler

	// AllowAnonymous serves a listener reachable beyond loopback although
	// the API has no authentication; without it NewHTTPServer refuses one.
	AllowAnonymous bool
	// MaxRequests caps requests in flight; more get 503.
	MaxRequests int
	// MaxQueries caps resend queries in flight (each reads the store and
	// streams its answer), within MaxRequests; more get 503.
	MaxQueries int
	// ReadHeaderTimeout bounds reading a request's header.
	ReadHeaderTimeout time.Duration
	// WriteTimeout bounds writing a small answer, and each write of a
	// streamed resend answer: a client that stops reading is cut off.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration

	Registerer prometheus.Registerer // nil registers no metrics
	Logger     *slog.Logger          // nil discards logs
}

func (c *HTTPServerConfig) setDefaults() {
	setDefault(&c.MaxRequests, DefaultHTTPMaxRequests)
	setDefault(&c.MaxQueries, DefaultHTTPMaxQueries)
	setDefault(&c.ReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	setDefault(&c.WriteTimeout, DefaultHTTPWriteTimeout)
	setDefault(&c.IdleTimeout, DefaultHTTPIdleTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Validate reports negative limits.
func (c HTTPServerConfig) Validate() error {
	var errs []error
	if c.MaxRequests < 0 || c.MaxQueries < 0 {
		errs = append(errs, errors.New("max_requests and max_queries must not be negative"))
	}
	if c.ReadHeaderTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	return errors.Join(errs...)
}

// HTTP refusal reasons, the values of tributary_http_refused_total's label.
const (
	refusedRequests = "max_requests"
	refusedQueries  = "max_queries"
	refusedHost     = "host"
)

type httpMetrics struct {
	refused  *prometheus.CounterVec
	inFlight prometheus.Gauge
	aborted  prometheus.Counter
	// undecrypted counts encrypted messages left out of format=object
	// answers: their key was not held or did not come in time.
	undecrypted prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_http_refused_total",
			Help: "HTTP API requests refused, by reason: max_requests, max_queries (503), host (421, not a loopback name).",
		}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_http_requests_in_flight", Help: "HTTP API requests being served.",
		}),
		aborted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_http_queries_aborted_total",
			Help: "Resend answers cut off: the client stopped reading (write_timeout) or went away.",
		}),
		undecrypted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_http_resend_undecrypted_total",
			Help: "Encrypted messages left out of format=object resend answers: their group key was not obtained (never sent as ciphertext into JSON).",
		}),
	}
	for _, r := range []string{refusedRequests, refusedQueries, refusedHost} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.refused, m.inFlight, m.aborted, m.undecrypted)
	}
	return m
}

// HTTPServer is the HTTP API on one listener.
type HTTPServer struct {
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// NewHTTPServer serves the HTTP API (see newHTTPHandler) on ln with cfg's
// timeouts and limits. A listener reachable beyond loopback is refused
// unless cfg.AllowAnonymous; on a loopback listener a request's Host header
// must name it (localhost, 127.0.0.1 or [::1] with its port), which defeats
// DNS rebinding from a browser on the gateway.
func NewHTTPServer(ln net.Listener, cfg HTTPServerConfig) (*HTTPServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	cfg.setDefaults()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("http api: listener address %s is not TCP", ln.Addr())
	}
	loopback := addr.IP.IsLoopback()
	if !loopback && !cfg.AllowAnonymous && cfg.Authenticate == nil {
		return nil, fmt.Errorf("http api on %s: reachable beyond loopback and the API has no authentication; "+
			"listen on 127.0.0.1 or set http.allow_anonymous = true", addr)
	}
	log := cfg.Logger.With("component", "http")
	if !loopback && cfg.Authenticate == nil {
		log.Warn("http api reachable beyond loopback without authentication (http.allow_anonymous = true): "+
			"anyone who can reach it reads all stored data", "address", addr.String())
	}
	m := newHTTPMetrics(cfg.Registerer)
	logs := newLogLimiter(log, time.Minute)
	g := &guard{
		next:     newHTTPHandler(cfg, m, logs),
		m:        m,
		requests: newSlots(cfg.MaxRequests, refusedRequests, "requests", m, logs),
		log:      logs,
		auth:     cfg.Authenticate,
	}
	if loopback {
		g.hosts = loopbackHosts(addr)
	}
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return &HTTPServer{srv: srv, ln: ln, log: log}, nil
}

// Serve answers requests until ctx is cancelled, then shuts down, giving
// requests in flight a few seconds.
func (s *HTTPServer) Serve(ctx context.Context) error {
	done := make(chan struct{})
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(shutdownCtx); err != nil {
			_ = s.srv.Close()
		}
	}()
	s.log.Info("http api listening", "address", s.ln.Addr().String())
	err := s.srv.Serve(s.ln)
	// Serve returns as Shutdown begins: wait for it to finish.
	close(done)
	<-shutdown
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http api: %w", err)
	}
	return nil
}

// loopbackHosts lists the Host header values that name a loopback
// listener: its port is required unless it is 80.
func loopbackHosts(addr *net.TCPAddr) map[string]bool {
	port := strconv.Itoa(addr.Port)
	hosts := map[string]bool{}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", addr.IP.String()} {
		hostPort := net.JoinHostPort(h, port)
		hosts[hostPort] = true
		if port == "80" {
			hosts[strings.TrimSuffix(hostPort, ":80")] = true
		}
	}
	return hosts
}

// guard applies the Host check and the request limit before the routes.
type guard struct {
	next     http.Handler
	m        *httpMetrics
	hosts    map[string]bool // nil: any Host (non-loopback listener)
	requests *slots          // requests in flight
	log      *logLimiter
	auth     func(http.ResponseWriter, *http.Request) bool // nil: none
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.hosts != nil && !g.hosts[strings.ToLower(r.Host)] {
		g.m.refused.WithLabelValues(refusedHost).Inc()
		g.log.Warn(refusedHost, "http request refused: Host header does not name the loopback listener (DNS rebinding?)",
			"host", truncate(r.Host, 64), "remote", r.RemoteAddr)
		writeJSONError(w, http.StatusMisdirectedRequest, "Host "+truncate(r.Host, 64)+" is not this gateway's loopback address")
		return
	}
	if g.auth != nil && r.URL.Path != "/healthz" && !g.auth(w, r) {
		return
	}
	if !g.requests.acquire(w) {
		return
	}
	defer g.requests.release()
	g.m.inFlight.Inc()
	defer g.m.inFlight.Dec()
	g.next.ServeHTTP(w, r)
}

// slots caps work in flight, refusing (503, counted, logged) rather than
// queueing beyond the cap: a queue would only hold attackers' requests.
type slots struct {
	sem    chan struct{}
	reason string // the config key without "http.", and the metric's label
	what   string // what is counted, for messages
	m      *httpMetrics
	log    *logLimiter
}

func newSlots(n int, reason, what string, m *httpMetrics, log *logLimiter) *slots {
	return &slots{sem: make(chan struct{}, n), reason: reason, what: what, m: m, log: log}
}

// acquire takes a slot, or answers 503 and reports false.
func (s *slots) acquire(w http.ResponseWriter) bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
	}
	s.m.refused.WithLabelValues(s.reason).Inc()
	s.log.Warn(s.reason, "http request refused: too many "+s.what+" in flight", s.reason, cap(s.sem))
	w.Header().Set("Retry-After", "1")
	writeJSONError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many %s in flight (http.%s = %d)", s.what, s.reason, cap(s.sem)))
	return false
}

func (s *slots) release() { <-s.sem }

// writeJSONError answers {"error": msg} with status.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// logLimiter logs each kind of line at most once per interval, counting
// the lines it held back, so a hostile client cannot flood the log.
type logLimiter struct {
	log      *slog.Logger
	interval time.Duration

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: log, interval: interval, last: map[string]time.Time{}, held: map[string]int{}}
}

// Warn logs msg unless a line of the same kind was logged within the
// interval.
func (l *logLimiter) Warn(kind, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if t, ok := l.last[kind]; ok && now.Sub(t) < l.interval {
		l.held[kind]++
		l.mu.Unlock()
		return
	}
	held := l.held[kind]
	l.last[kind], l.held[kind] = now, 0
	l.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	l.log.Warn(msg, args...)
}
