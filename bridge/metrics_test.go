package bridge

import (
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// nameRecorder is a Registerer that keeps the fully qualified name of every
// metric described to it.
type nameRecorder struct{ names []string }

var _ prometheus.Registerer = (*nameRecorder)(nil)

var fqName = regexp.MustCompile(`fqName: "([^"]*)"`)

func (r *nameRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names = append(r.names, m[1])
		}
	}
	return nil
}

func (r *nameRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *nameRecorder) Unregister(prometheus.Collector) bool { return true }

// TestMetricNamesPrefix keeps the one metric prefix of docs/conventions.md
// for every metric this package registers.
func TestMetricNamesPrefix(t *testing.T) {
	reg := &nameRecorder{}
	NewMetrics(reg)
	reg.MustRegister(NewClockCollector())
	NewForwarder(nil, nil, ForwardConfig{Registerer: reg})
	NewDeliverer(nil, nil, nil, reg, nil)
	newOrderMetrics("test", reg)
	newHTTPMetrics(reg)
	if len(reg.names) < 20 {
		t.Fatalf("recorded %d metric names, want every metric of the package: %v", len(reg.names), reg.names)
	}
	for _, name := range reg.names {
		if !strings.HasPrefix(name, "tributary_") {
			t.Errorf("metric %q: want the prefix tributary_ (docs/conventions.md)", name)
		}
	}
}
