package streamrnet

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connected  *prometheus.GaugeVec
	messages   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	duplicates prometheus.Counter
}

type proxyMetrics struct {
	connected prometheus.Gauge
	in, out   prometheus.Counter
	errors    *prometheus.CounterVec // by kind
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tributary_streamr_network_connected", Help: "1 while the proxy connection to the Streamr node is up.",
		}, []string{"proxy"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_streamr_network_messages_total", Help: "Stream messages sent to (out) and received from (in) a Streamr node.",
		}, []string{"proxy", "direction"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_streamr_network_errors_total",
			Help: "Errors per Streamr node by kind: dial, handshake, connection, refused, write, decode, rate, pending_requests, unexpected, unsolicited_response, not_subscribed (a message on a partition joined to publish that is not a group key request for us), unknown_method (a request this client does not serve, answered UNKNOWN_RPC_METHOD).",
		}, []string{"proxy", "kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_streamr_network_duplicates_total", Help: "Stream messages delivered again by another proxy and dropped.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.messages, m.errors, m.duplicates)
	}
	return m
}

func (m *metrics) forProxy(url string) proxyMetrics {
	return proxyMetrics{
		connected: m.connected.WithLabelValues(url),
		in:        m.messages.WithLabelValues(url, "in"),
		out:       m.messages.WithLabelValues(url, "out"),
		errors:    m.errors.MustCurryWith(prometheus.Labels{"proxy": url}),
	}
}
