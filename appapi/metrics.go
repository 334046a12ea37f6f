package appapi

import "github.com/prometheus/client_golang/prometheus"

// Interface names, the values of the metrics' interface label.
const (
	ifaceHTTP = "http"
	ifaceWS   = "websocket"
)

// Metrics count what the app interfaces accept, refuse and deliver.
type Metrics struct {
	published *prometheus.CounterVec // interface
	refused   *prometheus.CounterVec // interface, reason
	delivered prometheus.Counter
	// undecrypted counts encrypted messages not sent to subscribers.
	undecrypted prometheus.Counter
	dropped     *prometheus.CounterVec // reason
	conns       *prometheus.GaugeVec   // action
}

// NewMetrics registers the app interfaces' metrics on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_app_published_total",
			Help: "Readings apps published that are durable (acknowledged), by interface: http, websocket.",
		}, []string{"interface"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_app_refused_total",
			Help: "App requests and messages refused, by interface and reason (bad_request, auth, too_large, invalid_json, storage, max_connections, …).",
		}, []string{"interface", "reason"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_app_delivered_total", Help: "Messages sent to WebSocket subscribers.",
		}),
		undecrypted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_app_undecrypted_total",
			Help: "Encrypted messages not sent to WebSocket subscribers: their group key was not obtained (never sent as ciphertext).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_app_subscribers_dropped_total",
			Help: "WebSocket subscribers disconnected by the gateway, by reason: slow (a write outlasted write_timeout), dead (no pong), store (storage failed).",
		}, []string{"reason"}),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tributary_app_websocket_connections", Help: "Open WebSocket connections, by action: publish, subscribe.",
		}, []string{"action"}),
	}
	for _, i := range []string{ifaceHTTP, ifaceWS} {
		m.published.WithLabelValues(i)
	}
	if reg != nil {
		reg.MustRegister(m.published, m.refused, m.delivered, m.undecrypted, m.dropped, m.conns)
	}
	return m
}
