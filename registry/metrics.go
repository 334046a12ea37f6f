package registry

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	lookups       *prometheus.CounterVec
	unreachable   *prometheus.CounterVec
	entries       prometheus.Gauge
	evictions     prometheus.Counter
	invalidations prometheus.Counter
	events        prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_registry_lookups_total",
			Help: "Permission look-ups by result: hit (fresh cache entry), miss (asked the chain), error (the chain could not be asked).",
		}, []string{"result"}),
		unreachable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_registry_unreachable_decisions_total",
			Help: "Permission checks answered without the chain, by on_unreachable outcome: allowed, last_known, denied.",
		}, []string{"outcome"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tributary_registry_cache_entries", Help: "Cached (stream, user) permission answers.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_registry_cache_evictions_total", Help: "Times the permission cache was full (max_cache_entries) and dropped its older half.",
		}),
		invalidations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_registry_invalidations_total", Help: "Cached answers dropped because a PermissionUpdated* event changed them.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_registry_events_total", Help: "StreamRegistry events read by log polling.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.lookups, m.unreachable, m.entries, m.evictions, m.invalidations, m.events} {
		if err := r.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if errors.As(err, &dup) {
				return fmt.Errorf("a second registry client on one registerer: %w", err)
			}
			return err
		}
	}
	return nil
}
