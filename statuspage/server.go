// Package statuspage serves the gateway's status page, its network
// explorer and the /status document they are drawn from. The gateway
// supplies the facts (Config.Source); the server samples them at a fixed
// interval, adds rates, sparklines and the backlog's drain progress, and
// pushes every snapshot to the open pages as server-sent events.
package statuspage

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed assets
var assets embed.FS

// Defaults for zero Config fields.
const (
	DefaultInterval         = time.Second
	DefaultHistory          = 300 // points: five minutes at one a second
	DefaultMaxStreams       = 8
	DefaultDrainLogInterval = 10 * time.Second
	defaultWriteTimeout     = 10 * time.Second
)

// Config configures a Server.
type Config struct {
	// Source returns the gateway's facts; it is called once per Interval
	// from one goroutine.
	Source func(ctx context.Context) Status
	// Interval is how often Source is sampled and the pages updated.
	Interval time.Duration
	// History is how many samples a sparkline shows.
	History int
	// MaxStreams caps the open live streams (pages); more get 503.
	MaxStreams int
	// DrainLogInterval is how often a draining backlog's progress is logged.
	DrainLogInterval time.Duration
	// WriteTimeout bounds each write of a live stream: a page that stops
	// reading is cut off.
	WriteTimeout time.Duration
	Now          func() time.Time
	Registerer   prometheus.Registerer // nil registers no metrics
	Logger       *slog.Logger          // nil discards logs
}

func (c *Config) setDefaults() {
	setDefault(&c.Interval, DefaultInterval)
	setDefault(&c.History, DefaultHistory)
	setDefault(&c.MaxStreams, DefaultMaxStreams)
	setDefault(&c.DrainLogInterval, DefaultDrainLogInterval)
	setDefault(&c.WriteTimeout, defaultWriteTimeout)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Server samples the gateway's status and serves it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	sampler *sampler
	streams chan struct{} // a slot per open live stream

	sampleMu sync.Mutex // one sample at a time: the sampler is not concurrent
	latest   atomic.Pointer[snapshot]
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced at every snapshot
	stopped  chan struct{} // closed when Run returns: live streams end

	refused      prometheus.Counter
	streamsOpen  prometheus.Gauge
	lastRefusalM sync.Mutex
	lastRefusal  time.Time
}

// snapshot is one sampled Status, encoded once, when first read: with
// no page open and nobody asking /status, nothing is encoded.
type snapshot struct {
	status Status
	once   sync.Once
	json   []byte
}

func (s *snapshot) encoded(log *slog.Logger) []byte {
	s.once.Do(func() {
		var err error
		if s.json, err = json.Marshal(s.status); err != nil {
			log.Error("encode status", "err", err)
			s.json = []byte(`{"error":"status could not be encoded"}`)
		}
	})
	return s.json
}

// New returns a server; Run samples, Handler serves.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("status page: no source")
	}
	if cfg.Interval < 0 || cfg.History < 0 || cfg.MaxStreams < 0 || cfg.DrainLogInterval < 0 || cfg.WriteTimeout < 0 {
		return nil, errors.New("status page: interval, history, max_streams and timeouts must not be negative")
	}
	cfg.setDefaults()
	log := cfg.Logger.With("component", "status")
	s := &Server{
		cfg:     cfg,
		log:     log,
		sampler: newSampler(cfg.History, cfg.DrainLogInterval, log),
		streams: make(chan struct{}, cfg.MaxStreams),
		changed: make(chan struct{}),
		stopped: make(chan struct{}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_status_streams_refused_total",
			Help: "Live status streams (open status pages) refused at http.max_status_streams.",
		}),
		streamsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_status_streams", Help: "Live status streams open (status pages being watched).",
		}),
	}
	if cfg.Registerer != nil {
		if err := errors.Join(cfg.Registerer.Register(s.refused), cfg.Registerer.Register(s.streamsOpen)); err != nil {
			return nil, fmt.Errorf("status page metrics: %w", err)
		}
	}
	return s, nil
}

// Run samples the source every Interval until ctx ends; then the live
// streams end too.
func (s *Server) Run(ctx context.Context) error {
	defer close(s.stopped)
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.sample(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Server) sample(ctx context.Context) {
	s.sampleMu.Lock()
	defer s.sampleMu.Unlock()
	st := s.cfg.Source(ctx)
	s.sampler.add(&st, s.cfg.Now(), s.cfg.Interval)
	s.latest.Store(&snapshot{status: st})
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Latest returns the last snapshot, sampling one if there is none yet.
func (s *Server) Latest(ctx context.Context) Status {
	return s.current(ctx).status
}

func (s *Server) current(ctx context.Context) *snapshot {
	if snap := s.latest.Load(); snap != nil {
		return snap
	}
	s.sample(ctx) // before Run's first sample
	return s.latest.Load()
}

// Handler serves
//
//	GET /               the status page and explorer (embedded assets)
//	GET /assets/{file}  its script and style
//	GET /status         the Status document (JSON, docs/status.md)
//	GET /status/events  every new Status as a server-sent event
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	files := embeddedFiles()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
		files["index.html"].serve(w)
	})
	mux.HandleFunc("GET /assets/{file}", func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[r.PathValue("file")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=3600") // they change only with the binary
		f.serve(w)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(s.current(r.Context()).encoded(s.log))
	})
	mux.HandleFunc("GET /status/events", s.serveEvents)
	return mux
}

// embeddedFile is one asset, served whole. The assets are a few KB and
// never change while the binary runs, so what http.FileServer adds (Range
// requests, modification times) buys nothing, and its Range parser is the
// path of GO-2026-6609.
type embeddedFile struct {
	contentType string
	body        []byte
}

func (f embeddedFile) serve(w http.ResponseWriter) {
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(f.body)))
	_, _ = w.Write(f.body)
}

// embeddedFiles reads the assets directory, by file name.
func embeddedFiles() map[string]embeddedFile {
	entries, _ := assets.ReadDir("assets") // cannot fail: the directory is embedded
	files := make(map[string]embeddedFile, len(entries))
	for _, e := range entries {
		body, _ := assets.ReadFile("assets/" + e.Name())
		files[e.Name()] = embeddedFile{contentType: mime.TypeByExtension(path.Ext(e.Name())), body: body}
	}
	return files
}

// serveEvents streams every snapshot as an SSE "status" event until the
// client goes away or the server stops.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case s.streams <- struct{}{}:
	default:
		s.refuseStream(w)
		return
	}
	defer func() { <-s.streams }()
	s.streamsOpen.Inc()
	defer s.streamsOpen.Dec()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	var sent uint64
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if snap := s.current(r.Context()); snap.status.Seq != sent {
			if err := s.writeEvent(w, rc, snap); err != nil {
				return // the page went away or stopped reading
			}
			sent = snap.status.Seq
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.stopped:
			return
		case <-changed:
		}
	}
}

func (s *Server) writeEvent(w http.ResponseWriter, rc *http.ResponseController, snap *snapshot) error {
	if err := rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "event: status\nid: %d\ndata: %s\n\n", snap.status.Seq, snap.encoded(s.log)); err != nil {
		return err
	}
	return rc.Flush()
}

// refuseStream answers 503, counted, logged at most once a minute.
func (s *Server) refuseStream(w http.ResponseWriter) {
	s.refused.Inc()
	s.lastRefusalM.Lock()
	logIt := time.Since(s.lastRefusal) >= time.Minute
	if logIt {
		s.lastRefusal = time.Now()
	}
	s.lastRefusalM.Unlock()
	if logIt {
		s.log.Warn("status stream refused: too many open status pages", "max_status_streams", cap(s.streams))
	}
	w.Header().Set("Retry-After", "5")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"error": fmt.Sprintf("too many live status streams (http.max_status_streams = %d)", cap(s.streams)),
	})
}
