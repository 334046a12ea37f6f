package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus collectors, labelled by stream part.
type metrics struct {
	peers     *prometheus.GaugeVec
	mesh      *prometheus.GaugeVec
	penalised prometheus.Gauge
	redials   prometheus.Counter
	resyncs   prometheus.Counter
	in        *prometheus.CounterVec
	out       *prometheus.CounterVec
	dups      *prometheus.CounterVec
	drops     *prometheus.CounterVec
	bytesIn   *prometheus.CounterVec
	bytesOut  *prometheus.CounterVec
	again     *prometheus.CounterVec
	resend    *resendMetrics
	refused   *refusals
}

const labelPart = "stream_part"

func newMetrics(reg prometheus.Registerer, log *slog.Logger, logRepeat time.Duration) (*metrics, error) {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: name, Help: help,
		}, append([]string{labelPart}, labels...))
	}
	m := &metrics{
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: "peers",
			Help: "Connected peers subscribed to the stream partition's topic.",
		}, []string{labelPart}),
		mesh: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: "neighbours",
			Help: "Mesh peers in the stream partition: those each message is forwarded to.",
		}, []string{labelPart}),
		penalised: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: "penalised_peers",
			Help: "Connected peers whose GossipSub score is negative (they sent invalid messages or broke the protocol).",
		}),
		redials: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: "redials_total",
			Help: "Lost bootstrap peers and partition members connected to again.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: "resyncs_total",
			Help: "Connections closed and redialled because GossipSub had a mesh peer it did not list as subscribed.",
		}),
		in:       counter("messages_in_total", "Valid messages received from peers and delivered locally."),
		out:      counter("messages_out_total", "Messages published by this node."),
		dups:     counter("duplicates_total", "Copies of already seen messages received (dropped)."),
		drops:    counter("drops_total", "Messages dropped, by reason.", "reason"),
		bytesIn:  counter("bytes_in_total", "Encoded bytes of valid messages received from peers."),
		bytesOut: counter("bytes_out_total", "Encoded bytes of messages published by this node."),
		again:    counter("reannounced_total", "Chain tips published again after messages were dropped at a full send queue to a peer."),
		resend:   newResendMetrics(),
		refused:  newRefusals(log, logRepeat),
	}
	if reg == nil {
		return m, nil
	}
	collectors := append([]prometheus.Collector{m.peers, m.mesh, m.penalised, m.redials, m.resyncs, m.in, m.out, m.dups, m.drops, m.bytesIn, m.bytesOut, m.again, m.refused.count}, m.resend.collectors()...)
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register overlay metrics: %w (one Node per registry)", err)
			}
			return nil, fmt.Errorf("register overlay metrics: %w", err)
		}
	}
	return m, nil
}

// partMetrics are the collectors of one stream partition.
type partMetrics struct {
	label       string
	peers       prometheus.Gauge
	mesh        prometheus.Gauge
	in          prometheus.Counter
	out         prometheus.Counter
	dups        prometheus.Counter
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	reannounced prometheus.Counter
	drops       *prometheus.CounterVec // curried: reason only
}

func (m *metrics) forPart(label string) *partMetrics {
	drops, _ := m.drops.CurryWith(prometheus.Labels{labelPart: label}) // cannot fail: the label exists
	return &partMetrics{
		label:       label,
		peers:       m.peers.WithLabelValues(label),
		mesh:        m.mesh.WithLabelValues(label),
		in:          m.in.WithLabelValues(label),
		out:         m.out.WithLabelValues(label),
		dups:        m.dups.WithLabelValues(label),
		bytesIn:     m.bytesIn.WithLabelValues(label),
		bytesOut:    m.bytesOut.WithLabelValues(label),
		reannounced: m.again.WithLabelValues(label),
		drops:       drops,
	}
}

// drop counts one dropped message.
func (p *partMetrics) drop(reason string) { p.drops.WithLabelValues(reason).Inc() }

// dropN counts n messages dropped for reason (a bundle's).
func (p *partMetrics) dropN(reason string, n int) { p.drops.WithLabelValues(reason).Add(float64(n)) }

// remove deletes a left partition's series.
func (m *metrics) remove(label string) {
	l := prometheus.Labels{labelPart: label}
	m.peers.Delete(l)
	m.mesh.Delete(l)
	for _, c := range []*prometheus.CounterVec{m.in, m.out, m.dups, m.bytesIn, m.bytesOut, m.again} {
		c.Delete(l)
	}
	m.drops.DeletePartialMatch(l)
}
