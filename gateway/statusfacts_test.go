package gateway

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/statuspage"
	"github.com/tributary-iot/tributary/streamr"
)

// The status page's facts of a running gateway agree with its metrics
// and its identity, and carry the Streamr Network proxies when there are
// any ("not configured" otherwise).
func TestStatusFacts(t *testing.T) {
	for _, withProxies := range []bool{false, true} {
		t.Run(fmt.Sprintf("proxies=%v", withProxies), func(t *testing.T) {
			g := newTestGateway(t, "")
			since := time.Unix(1_700_000_000, 0).UTC()
			proxy := streamr.ProxyState{URL: "wss://proxy.example:32200", State: "connected", Since: since, MessagesOut: 3}
			if withProxies {
				g.streamrProxies = func() []streamr.ProxyState { return []streamr.ProxyState{proxy} }
			}
			g.run(t)
			c := connect(t, g.mqttAddr(t), "facts")
			for i := range 3 {
				if tok := c.Publish("facts/data", 1, false, fmt.Sprintf(`{"i":%d}`, i)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
			c.Disconnect(0)
			s := g.system()
			st := s.statusFacts(context.Background())
			m := gatherMetrics(s.reg)
			if st.Readings.In != 3 || float64(st.Readings.In) != m.sum("tributary_readings_in_total") {
				t.Errorf("readings in %d, metric %v, want 3", st.Readings.In, m.sum("tributary_readings_in_total"))
			}
			if !st.Health.OK || st.Identity.Publisher != g.Identity().Publisher || st.Identity.KeyBackend != "file" || st.Overlay == nil {
				t.Errorf("health %+v, identity %+v, overlay %+v", st.Health, st.Identity, st.Overlay)
			}
			if st.StreamrNetwork.Configured != withProxies {
				t.Errorf("streamr_network.configured = %v", st.StreamrNetwork.Configured)
			}
			hasProxy := slices.ContainsFunc(st.Nodes, func(n statuspage.Node) bool { return n.Kind == "proxy" && n.ID == proxy.URL && n.Connected })
			if hasProxy != withProxies || (withProxies && st.StreamrNetwork.Proxies[0] != proxy) {
				t.Errorf("proxies %+v, nodes %+v", st.StreamrNetwork.Proxies, st.Nodes)
			}
			if len(st.Nodes) == 0 || st.Nodes[0].Kind != "self" || st.Nodes[0].ID != st.Identity.PeerID {
				t.Errorf("nodes %+v: want this gateway first", st.Nodes)
			}
		})
	}
}
