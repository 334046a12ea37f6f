package bridge

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// History reads stored signed messages of a stream partition in
// (timestamp, sequence number) order; storage.Store satisfies it.
type History interface {
	Messages(part streamr.StreamPartID, from, to int64, fn func(encoded []byte) error) error
}

// newHTTPHandler serves the local HTTP API:
//
//	/         the status page, /status its JSON, /status/events live (cfg.Pages)
//	/metrics  Prometheus metrics from cfg.Gatherer
//	/healthz  200 while cfg.Health returns nil
//	/receipts how far each receiver holds this gateway's chains, per stream partition (JSON)
//	/streams  the stream partitions with stored messages, their counts and time spans, if history is a PartLister (JSON)
//	/streams/{id}/data/partitions/{p}/{last|from|range}?format=object|raw
//	          the Streamr storage node's resend queries, answered from
//	          history as a JSON array of messages (object, the default) or
//	          in the raw format ([uint32 length][StreamMessage]…)
func newHTTPHandler(cfg HTTPServerConfig, m *httpMetrics, logs *logLimiter) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := cfg.Health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /receipts", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Receipts == nil {
			writeJSONError(w, http.StatusServiceUnavailable, "receipts are not tracked (storage not open)")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(cfg.Receipts.Progress())
	})
	if cfg.Identity != nil {
		mux.HandleFunc("GET /identity", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(cfg.Identity())
		})
	}
	if cfg.Rekey != nil {
		mux.HandleFunc("POST /streams/{id}/rekey", func(w http.ResponseWriter, r *http.Request) { serveRekey(w, r, cfg.Rekey) })
	}
	if cfg.Pages != nil {
		for _, route := range []string{"GET /{$}", "GET /assets/", "GET /status", "GET /status/events"} {
			mux.Handle(route, cfg.Pages)
		}
	}
	if lister, ok := cfg.History.(PartLister); ok {
		mux.HandleFunc("GET /streams", func(w http.ResponseWriter, _ *http.Request) { serveParts(w, lister) })
	}
	h := &resendHandler{
		history:      cfg.History,
		queries:      newSlots(cfg.MaxQueries, refusedQueries, "resend queries", m, logs),
		writeTimeout: cfg.WriteTimeout,
		keys:         cfg.Decrypter,
		m:            m,
		log:          logs,
	}
	mux.HandleFunc("GET /streams/{id}/data/partitions/{partition}/{query}", h.serve)
	for pattern, handler := range cfg.Routes {
		mux.Handle(pattern, handler)
	}
	return mux
}

// PartLister lists the stream partitions that hold stored messages and
// what each holds; storage.Store satisfies it.
type PartLister interface {
	Parts() ([]streamr.StreamPartID, error)
	PartStats(part streamr.StreamPartID) (storage.PartStats, error)
}

// StoredPart is one element of GET /streams.
type StoredPart struct {
	StreamPart     string `json:"streamPart"` // "streamID#partition"
	StreamID       string `json:"streamId"`
	Partition      int    `json:"partition"`
	Count          int64  `json:"count"`
	FirstTimestamp int64  `json:"firstTimestamp"` // ms
	LastTimestamp  int64  `json:"lastTimestamp"`  // ms
}

// serveParts writes the stored stream partitions as a JSON list of
// StoredPart.
func serveParts(w http.ResponseWriter, lister PartLister) {
	parts, err := lister.Parts()
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]StoredPart, 0, len(parts))
	for _, p := range parts {
		st, err := lister.PartStats(p)
		if err != nil {
			writeJSONError(w, http.StatusInternalServerError, err.Error())
			return
		}
		out = append(out, StoredPart{
			StreamPart: p.String(), StreamID: string(p.Stream), Partition: p.Partition,
			Count: st.Count, FirstTimestamp: st.First, LastTimestamp: st.Last,
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

type resendHandler struct {
	history      History
	queries      *slots        // resend queries in flight
	writeTimeout time.Duration // per write of the answer
	keys         Decrypter     // for format=object; nil: encrypted messages left out
	m            *httpMetrics
	log          *logLimiter
}

func (h *resendHandler) serve(w http.ResponseWriter, r *http.Request) {
	q, err := parseResendQuery(r.PathValue("id"), r.PathValue("partition"), r.PathValue("query"), r.URL.Query())
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "object" // the storage node's default
	}
	if format != "raw" && format != "object" {
		writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("format %q: want object or raw", format))
		return
	}
	if h.history == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "storage is not open (disk full?)")
		return
	}
	if !h.queries.acquire(w) {
		return
	}
	defer h.queries.release()
	// The answer streams through a small buffer; each write must finish
	// within writeTimeout, so a client that stops reading frees its slot.
	bw := bufio.NewWriterSize(&deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: h.writeTimeout}, 32<<10)
	if format == "raw" {
		w.Header().Set("Content-Type", "application/octet-stream")
		err = ForEachResend(h.history, q, streamr.NewRawWriter(bw).WriteFrame)
	} else {
		w.Header().Set("Content-Type", "application/json")
		arr := &jsonArrayWriter{w: bw, ctx: r.Context(), plain: NewPlaintext(h.keys)}
		if err = ForEachResend(h.history, q, arr.WriteFrame); err == nil {
			err = arr.Close()
		}
		h.reportUndecrypted(r, q, arr.undecrypted, arr.undecryptedErr)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// Headers may be out already; the client sees a truncated frame.
		h.m.aborted.Inc()
		h.log.Warn("resend_failed", "resend answer cut off", "stream_part", q.Part.String(), "remote", r.RemoteAddr, "err", err)
	}
}

// reportUndecrypted counts and logs the encrypted messages a JSON answer
// left out.
func (h *resendHandler) reportUndecrypted(r *http.Request, q streamr.ResendQuery, n int, err error) {
	if n == 0 {
		return
	}
	h.m.undecrypted.Add(float64(n))
	h.log.Warn("resend_undecrypted", "encrypted messages left out of a JSON resend answer", "stream_part", q.Part.String(),
		"remote", r.RemoteAddr, "messages", n, "err", err)
}

// deadlineWriter gives each write to the client its own deadline.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if err := d.rc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	return d.w.Write(p)
}

// WriteResend writes the messages matching q to out in stream order.
func WriteResend(history History, q streamr.ResendQuery, out *streamr.RawWriter) error {
	return ForEachResend(history, q, out.WriteFrame)
}

// ForEachResend calls emit with each encoded message matching q, in stream
// order; an error from emit stops the walk and is returned.
func ForEachResend(history History, q streamr.ResendQuery, emit func(encoded []byte) error) error {
	if q.Last > 0 {
		return writeLast(history, q, emit)
	}
	return history.Messages(q.Part, q.From.Timestamp, q.UpperBound().Timestamp, func(encoded []byte) error {
		ok, err := matches(&q, encoded)
		if err != nil || !ok {
			return err
		}
		return emit(encoded)
	})
}

// errEnough stops an iteration that has written what it should.
var errEnough = errors.New("enough messages")

// writeLast writes the newest q.Last matching messages in two passes, one
// counting the matches and one writing all but the first total-q.Last of
// them, so memory stays bounded whatever q.Last. Messages committed between
// the passes are not included.
func writeLast(history History, q streamr.ResendQuery, emit func(encoded []byte) error) error {
	total := 0
	err := history.Messages(q.Part, 0, math.MaxInt64, func(encoded []byte) error {
		ok, err := matches(&q, encoded)
		if ok {
			total++
		}
		return err
	})
	if err != nil {
		return err
	}
	skip, left := total-q.Last, min(total, q.Last)
	err = history.Messages(q.Part, 0, math.MaxInt64, func(encoded []byte) error {
		ok, err := matches(&q, encoded)
		switch {
		case err != nil || !ok:
			return err
		case skip > 0:
			skip--
			return nil
		case left == 0:
			return errEnough
		}
		left--
		return emit(encoded)
	})
	if errors.Is(err, errEnough) {
		return nil
	}
	return err
}

// matches reports whether the stored message answers q.
func matches(q *streamr.ResendQuery, encoded []byte) (bool, error) {
	if q.Last > 0 && q.Publisher == nil && q.ChainID == "" {
		return true, nil
	}
	id, _, err := streamr.UnmarshalHeader(encoded)
	if err != nil {
		return false, fmt.Errorf("stored message of %s: %w", q.Part, err)
	}
	return q.Matches(&id), nil
}

// parseResendQuery reads the storage node's query parameters:
// last?count, from?fromTimestamp&fromSequenceNumber&publisherId,
// range?fromTimestamp&fromSequenceNumber&toTimestamp&toSequenceNumber&publisherId&msgChainId.
func parseResendQuery(rawID, partition, kind string, v url.Values) (streamr.ResendQuery, error) {
	id, err := url.PathUnescape(rawID)
	if err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("stream ID %q: %w", rawID, err)
	}
	stream, err := streamr.ParseStreamID(id)
	if err != nil {
		return streamr.ResendQuery{}, err
	}
	p, err := strconv.Atoi(partition)
	if err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("partition %q is not a number", partition)
	}
	part, err := streamr.NewStreamPartID(stream, p)
	if err != nil {
		return streamr.ResendQuery{}, err
	}
	q := streamr.ResendQuery{Part: part, To: streamr.MaxRef}
	if q.Publisher, err = optionalHex(v.Get("publisherId")); err != nil {
		return q, err
	}
	q.ChainID = v.Get("msgChainId")
	switch kind {
	case "last":
		q.Last, err = intParam(v, "count", 1, 1_000_000)
		return q, err
	case "from":
		q.From, err = refParams(v, "fromTimestamp", "fromSequenceNumber")
		return q, err
	case "range":
		if q.From, err = refParams(v, "fromTimestamp", "fromSequenceNumber"); err != nil {
			return q, err
		}
		q.To, err = refParams(v, "toTimestamp", "toSequenceNumber")
		if err == nil && strings.TrimSpace(v.Get("toSequenceNumber")) == "" {
			q.To.SequenceNumber = math.MaxInt32
		}
		return q, err
	}
	return q, fmt.Errorf("query %q: want last, from or range", kind)
}

func refParams(v url.Values, tsName, seqName string) (streamr.MessageRef, error) {
	ts, err := ParseTime(v.Get(tsName))
	if err != nil {
		return streamr.MessageRef{}, fmt.Errorf("%s: %w", tsName, err)
	}
	ref := streamr.MessageRef{Timestamp: ts}
	if s := v.Get(seqName); s != "" {
		n, err := intParam(v, seqName, 0, math.MaxInt32)
		if err != nil {
			return ref, err
		}
		ref.SequenceNumber = int32(n)
	}
	return ref, nil
}

func intParam(v url.Values, name string, lo, hi int) (int, error) {
	s := v.Get(name)
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q: want an integer from %d to %d", name, s, lo, hi)
	}
	return n, nil
}

func optionalHex(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(s), "0x"))
	if err != nil {
		return nil, fmt.Errorf("publisherId %q: %w", s, err)
	}
	return b, nil
}

// ParseTime reads a time as milliseconds since the epoch or RFC 3339.
// An empty string is 0.
func ParseTime(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("time %q: want milliseconds since the epoch or RFC 3339", s)
	}
	return t.UnixMilli(), nil
}
