package appapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
)

// Publisher takes an app's reading into the gateway's durable pipeline;
// bridge.Pipeline satisfies it.
type Publisher interface {
	IngestDirect(d bridge.Direct) (wait func(context.Context) error, reason *bridge.Reason)
}

// Permissions answers whether a user holds a StreamRegistry permission on
// a stream (the registry client satisfies it; see the team's contract).
type Permissions interface {
	Allowed(ctx context.Context, streamID string, user []byte, p streamr.Permission, at time.Time) (bool, error)
}

// Defaults of zero PublishConfig fields.
const (
	DefaultMaxBody        = 1 << 20 // the node's 1024 kb
	DefaultPublishTimeout = 10 * time.Second
	DefaultPartitions     = 1
)

// PublishConfig configures the publish side of the app interfaces.
type PublishConfig struct {
	Publisher Publisher // required
	// Partitions is the partition count partitionKey and partitionKeyField
	// hash onto (the node reads it from the stream registry).
	Partitions int
	MaxBody    int64         // bytes of one message; more get 413 (HTTP) or close the connection (WebSocket)
	Timeout    time.Duration // longest wait for a reading to be durable; then 503
	Metrics    *Metrics      // nil: unregistered
	Logger     *slog.Logger  // nil discards
	// Permissions, when set, must grant Publisher (the gateway's address,
	// which signs) publish on the stream, else 403; nil: no check (the
	// static policy without [registry]).
	Permissions Permissions
	PublisherID []byte // required with Permissions
}

func (c *PublishConfig) setDefaults() error {
	if c.Publisher == nil {
		return errors.New("appapi: Publisher is required")
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Partitions < 1 || c.Partitions > streamr.MaxPartitions {
		return fmt.Errorf("api.partitions %d: want 1 to %d", c.Partitions, streamr.MaxPartitions)
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultPublishTimeout
	}
	if c.MaxBody < 0 || c.Timeout < 0 {
		return errors.New("appapi: max body and timeout must not be negative")
	}
	if c.Permissions != nil && len(c.PublisherID) == 0 {
		return errors.New("appapi: PublisherID is required with Permissions")
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// publishError is a refusal with its HTTP status and metric reason.
type publishError struct {
	status int
	reason string
	err    error
}

func (e *publishError) Error() string { return e.err.Error() }

func refusal(status int, reason string, err error) *publishError {
	return &publishError{status: status, reason: reason, err: err}
}

// publish takes one decoded message to part and waits until it is durable.
func publish(ctx context.Context, cfg *PublishConfig, source string, part streamr.StreamPartID, m message) *publishError {
	if perr := cfg.checkPublish(ctx, part.Stream); perr != nil {
		return perr
	}
	wait, reason := cfg.Publisher.IngestDirect(directFor(source, part, m))
	if reason != nil {
		return refusalFor(reason)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := wait(ctx); err != nil {
		return refusal(http.StatusServiceUnavailable, "storage", fmt.Errorf("reading not stored: %w", err))
	}
	return nil
}

// checkPublish asks Permissions whether the gateway may publish on stream.
func (c *PublishConfig) checkPublish(ctx context.Context, stream streamr.StreamID) *publishError {
	if c.Permissions == nil {
		return nil
	}
	ok, err := c.Permissions.Allowed(ctx, string(stream), c.PublisherID, streamr.PermissionPublish, time.Now())
	switch {
	case err != nil:
		return refusal(http.StatusServiceUnavailable, "permission_check", fmt.Errorf("stream %s: publish permission unknown: %w", stream, err))
	case !ok:
		return refusal(http.StatusForbidden, "permission", fmt.Errorf("stream %s: the gateway %s has no publish permission", stream, streamr.UserID(c.PublisherID)))
	}
	return nil
}

func directFor(source string, part streamr.StreamPartID, m message) bridge.Direct {
	return bridge.Direct{Source: source, Part: part, Timestamp: m.timestamp, Payload: m.content}
}

// refusalFor maps the pipeline's refusal onto a status.
func refusalFor(r *bridge.Reason) *publishError {
	switch r.Label {
	case "invalid_json", "invalid_timestamp", "missing_partition_key", "invalid_stream_id":
		return refusal(http.StatusBadRequest, r.Label, r)
	}
	return refusal(http.StatusServiceUnavailable, r.Label, r)
}

// HTTPPublish is the HTTP plugin's publish endpoint:
// POST /streams/{id}/ with a JSON object body, query timestamp and
// partition or partitionKey. It answers 200 once the reading is durable.
type HTTPPublish struct {
	cfg    PublishConfig
	source string // the chain of HTTP readings (one, as the node has one msgChainId per process)
	log    *slog.Logger
}

// NewHTTPPublish returns the endpoint; register it as
// "POST /streams/{id}/{$}".
func NewHTTPPublish(cfg PublishConfig) (*HTTPPublish, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &HTTPPublish{cfg: cfg, source: "http", log: cfg.Logger.With("component", "app_http")}, nil
}

func (h *HTTPPublish) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	part, m, perr := h.parse(w, r)
	if perr == nil {
		perr = publish(r.Context(), &h.cfg, h.source, part, m)
	}
	if perr != nil {
		h.cfg.Metrics.refused.WithLabelValues(ifaceHTTP, perr.reason).Inc()
		if perr.status >= 500 {
			w.Header().Set("Retry-After", "1")
			h.log.Warn("http publish refused", "stream_part", part.String(), "reason", perr.reason, "err", perr.err)
		}
		writeError(w, perr.status, perr.Error())
		return
	}
	h.cfg.Metrics.published.WithLabelValues(ifaceHTTP).Inc()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "OK") // the node's sendStatus(200)
}

// parse reads the stream partition and the message of a publish request.
func (h *HTTPPublish) parse(w http.ResponseWriter, r *http.Request) (streamr.StreamPartID, message, *publishError) {
	var part streamr.StreamPartID
	id, err := parseStreamID(r.PathValue("id"))
	if err != nil {
		return part, message{}, refusal(http.StatusBadRequest, "bad_request", err)
	}
	part.Stream = id
	q := r.URL.Query()
	t, err := parseTarget(q)
	if errors.Is(err, errCombination) {
		return part, message{}, refusal(http.StatusUnprocessableEntity, "bad_request", err)
	}
	if err != nil {
		return part, message{}, refusal(http.StatusBadRequest, "bad_request", err)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return part, message{}, refusal(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Errorf("body larger than %d bytes (api.max_message_size)", h.cfg.MaxBody))
	}
	if err != nil {
		return part, message{}, refusal(http.StatusBadRequest, "bad_request", fmt.Errorf("read body: %w", err))
	}
	m, err := decodePayload(body, false)
	if err != nil {
		return part, message{}, refusal(http.StatusBadRequest, "invalid_json", err)
	}
	if s := q.Get("timestamp"); s != "" {
		if m.timestamp, err = parseTimestamp(s); err != nil {
			return part, message{}, refusal(http.StatusBadRequest, "bad_request", fmt.Errorf("timestamp: %w", err))
		}
	}
	if part.Partition, err = t.resolve(m.content, h.cfg.Partitions); err != nil {
		return part, message{}, refusal(http.StatusBadRequest, "bad_request", err)
	}
	return part, m, nil
}

// writeError answers {"error": msg} with status, as the node does.
func writeError(w http.ResponseWriter, status int, msg string) { bridge.WriteJSONError(w, status, msg) }

// Authenticate checks the request's API key, answering 401 (none) or 403
// (wrong) itself; it fits bridge.HTTPServerConfig.Authenticate.
func (k Keys) Authenticate(m *Metrics) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		err := k.CheckRequest(r)
		if err == nil {
			return true
		}
		m.refused.WithLabelValues(ifaceHTTP, "auth").Inc()
		writeError(w, status(err), err.Error())
		return false
	}
}
