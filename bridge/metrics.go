package bridge

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus metrics.
type Metrics struct {
	readingsIn  *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	local       prometheus.Counter
	signed      prometheus.Counter
	queueDepth  prometheus.Gauge
	held        prometheus.Gauge
	signSeconds prometheus.Histogram
	signDelay   prometheus.Histogram
}

// NewMetrics creates the pipeline metrics and registers them on reg if it
// is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		readingsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_readings_in_total", Help: "Readings accepted and stored, by MQTT QoS.",
		}, []string{"qos"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_readings_rejected_total", Help: "Readings refused, by reason.",
		}, []string{"reason"}),
		local: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_readings_local_total", Help: "Readings of topics without a stream passed to local MQTT subscribers only (mqtt.unmapped = \"local\"); never stored, signed or forwarded.",
		}),
		signed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_messages_signed_total", Help: "Readings signed into Streamr messages and committed.",
		}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_sign_queue_depth", Help: "Stored readings waiting to be signed (capped at one batch).",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_signing_held", Help: "1 while signing is held because the clock is not synchronised.",
		}),
		signSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tributary_sign_seconds", Help: "Time to sign one message.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
		}),
		signDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tributary_sign_delay_seconds", Help: "From receipt of a reading to its signed message being committed.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.readingsIn, m.rejected, m.local, m.signed, m.queueDepth, m.held, m.signSeconds, m.signDelay)
	}
	return m
}

// ClockCollector exports the kernel clock sync state as gauges.
type ClockCollector struct {
	synced, maxErr *prometheus.Desc
}

var _ prometheus.Collector = (*ClockCollector)(nil)

// NewClockCollector returns a collector reading adjtimex at scrape time.
func NewClockCollector() *ClockCollector {
	return &ClockCollector{
		synced: prometheus.NewDesc("tributary_clock_synchronized", "1 if the kernel clock is NTP-synchronised.", nil, nil),
		maxErr: prometheus.NewDesc("tributary_clock_max_error_seconds", "Kernel's maximum clock error estimate.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ClockCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.synced
	ch <- c.maxErr
}

// Collect implements prometheus.Collector.
func (c *ClockCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := ReadClockSync()
	if err != nil {
		return
	}
	v := 0.0
	if s.Synced {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, v)
	ch <- prometheus.MustNewConstMetric(c.maxErr, prometheus.GaugeValue, s.MaxError.Seconds())
}
