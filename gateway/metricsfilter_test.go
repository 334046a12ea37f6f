package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// libp2p families that never counted anything are left out; ours and
// libp2p's that did count stay.
func TestQuietGatherer(t *testing.T) {
	reg := prometheus.NewRegistry()
	lp := prometheus.WrapRegistererWithPrefix("tributary_", reg)
	zero := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "libp2p_holepunch_direct_dial_total"}, []string{"outcome"})
	zero.WithLabelValues("success")
	counted := prometheus.NewCounter(prometheus.CounterOpts{Name: "libp2p_swarm_dials_total"})
	counted.Inc()
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "libp2p_rcmgr_streams_seconds"})
	lp.MustRegister(zero, counted, hist)
	ours := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tributary_overlay_peers"})
	reg.MustRegister(ours) // zero, but ours: kept

	for _, tc := range []struct {
		g    prometheus.Gatherer
		want []string
	}{
		{quietGatherer{reg}, []string{"tributary_libp2p_swarm_dials_total", "tributary_overlay_peers"}},
		{reg, []string{"tributary_libp2p_holepunch_direct_dial_total", "tributary_libp2p_rcmgr_streams_seconds", "tributary_libp2p_swarm_dials_total", "tributary_overlay_peers"}},
	} {
		fams, err := tc.g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range fams {
			got = append(got, f.GetName())
		}
		if len(got) != len(tc.want) {
			t.Fatalf("families %v, want %v", got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("families %v, want %v", got, tc.want)
			}
		}
	}
}
