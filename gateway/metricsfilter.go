package gateway

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// libp2pPrefix names the metric families libp2p registers (renamed from
// libp2p_* in the overlay).
const libp2pPrefix = "tributary_libp2p_"

// quietGatherer drops libp2p's metric families whose every sample is zero
// (the hole-punching and relay families alone are hundreds of lines of
// zeros on a gateway that never punches a hole); http.libp2p_zero_metrics
// serves them again.
type quietGatherer struct{ prometheus.Gatherer }

func (g quietGatherer) Gather() ([]*dto.MetricFamily, error) {
	fams, err := g.Gatherer.Gather()
	kept := fams[:0]
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), libp2pPrefix) || !allZero(f) {
			kept = append(kept, f)
		}
	}
	return kept, err
}

// allZero reports whether no sample of f has counted anything.
func allZero(f *dto.MetricFamily) bool {
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil && m.GetCounter().GetValue() != 0,
			m.Gauge != nil && m.GetGauge().GetValue() != 0,
			m.Untyped != nil && m.GetUntyped().GetValue() != 0,
			m.Histogram != nil && m.GetHistogram().GetSampleCount() != 0,
			m.Summary != nil && m.GetSummary().GetSampleCount() != 0:
			return false
		}
	}
	return true
}
