package gateway

import (
	"context"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/statuspage"
	"github.com/tributary-iot/tributary/streamr"
)

// statusFacts gathers what the status page shows. Counters are read from
// the gateway's metrics registry, so /status and /metrics never disagree;
// peer lists come from the overlay, from the same sources as its gauges.
func (s *system) statusFacts(failed context.Context) statuspage.Status {
	m := gatherMetrics(s.reg)
	st := statuspage.Status{
		Version:       s.opts.Version,
		UptimeSeconds: time.Since(s.started).Seconds(),
		Health:        s.statusHealth(failed),
		Identity:      s.statusIdentity(),
		Clock:         s.statusClock(m),
		MQTT:          statuspage.MQTT{Clients: int(s.broker.Stats().ClientsConnected), Listeners: addrStrings(s.broker.Addrs())},
		Storage: statuspage.Storage{
			UsedBytes:       int64(m.value("tributary_storage_lsm_bytes", nil) + m.value("tributary_storage_vlog_bytes", nil)),
			QuotaBytes:      int64(s.cfg.Storage.Quota),
			FreeBytes:       int64(m.value("tributary_storage_fs_free_bytes", nil)),
			SignedBytes:     int64(m.value("tributary_storage_signed_bytes", nil)),
			PendingReadings: s.store.PendingCount(),
		},
		Readings: statuspage.Readings{
			In:       uint64(m.sum("tributary_readings_in_total")),
			Signed:   uint64(m.sum("tributary_messages_signed_total")),
			Rejected: m.byLabel("tributary_readings_rejected_total", "reason", nil),
		},
		Partitions: []statuspage.Partition{},
		Nodes:      []statuspage.Node{},
		Orderers:   statusOrderers(m),
	}
	st.StreamrNetwork = s.statusStreamrNetwork()
	if s.node != nil {
		s.overlayFacts(&st, m)
	}
	st.Nodes = append(st.Nodes, proxyNodes(st.StreamrNetwork.Proxies)...)
	return st
}

// overlayFacts adds the forwarder, the overlay, the partitions and the
// nodes this gateway knows.
func (s *system) overlayFacts(st *statuspage.Status, m metricIndex) {
	st.Forward = &statuspage.Forward{
		BacklogMessages: uint64(m.value("tributary_forward_backlog_messages", nil)),
		HoldingBack:     s.forwarder.HoldingBack(),
		Partitions:      int(m.value("tributary_forward_partitions", nil)),
	}
	st.Overlay = &statuspage.Overlay{
		ConnectedPeers: s.node.ConnectedPeers(),
		PenalisedPeers: int(m.value("tributary_overlay_penalised_peers", nil)),
		DHT:            s.cfg.Overlay.DHT,
	}
	st.Partitions = s.statusPartitions(m)
	st.Nodes = s.statusNodes(st.Identity, st.Partitions)
}

func (s *system) statusHealth(failed context.Context) statuspage.Health {
	h := statuspage.Health{OK: true, State: s.ledState().String()}
	if err := s.health(failed); err != nil {
		h.OK, h.State, h.Error = false, "fault", err.Error()
	}
	return h
}

func (s *system) statusIdentity() statuspage.Identity {
	id := s.identity()
	backend := "file"
	if u, err := url.Parse(s.cfg.KeyURI()); err == nil && u.Scheme != "" {
		backend = u.Scheme
	}
	return statuspage.Identity{Publisher: id.Publisher, KeyType: id.KeyType, KeyBackend: backend, PeerID: id.PeerID, Addrs: id.Addrs}
}

func (s *system) statusClock(m metricIndex) statuspage.Clock {
	c := statuspage.Clock{Policy: s.cfg.Signing.OnUnsyncedClock, SigningHeld: m.value("tributary_signing_held", nil) == 1}
	sync, err := bridge.ReadClockSync()
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.Synced, c.MaxErrorSeconds = sync.Synced, sync.MaxError.Seconds()
	return c
}

func addrStrings(addrs []net.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// statusPartitions lists the joined partitions and those holding stored
// messages, with their counters and receipts.
func (s *system) statusPartitions(m metricIndex) []statuspage.Partition {
	byID := map[string]*statuspage.Partition{}
	var order []string
	add := func(part streamr.StreamPartID, role string) *statuspage.Partition {
		id := part.String()
		p, ok := byID[id]
		if !ok {
			p = &statuspage.Partition{ID: id, Stream: string(part.Stream), Partition: part.Partition,
				Roles: []string{}, PeerIDs: []string{}, NeighbourIDs: []string{}, Providers: []string{}}
			byID[id] = p
			order = append(order, id)
		}
		if role != "" && !slices.Contains(p.Roles, role) {
			p.Roles = append(p.Roles, role)
		}
		return p
	}
	for _, sub := range s.subs {
		for _, part := range sub.Parts() {
			add(part, "subscribe")
		}
	}
	for _, part := range s.stored {
		add(part, "store")
	}
	for _, ps := range s.node.PartitionStates() {
		p := add(ps.Part, "")
		p.Peers, p.Neighbours = len(ps.Peers), len(ps.Neighbours)
		p.PeerIDs, p.NeighbourIDs = ps.Peers, ps.Neighbours
		if ps.Providers != nil {
			p.Providers = ps.Providers
		}
	}
	for part, since := range s.forwarder.HeldParts() {
		t := since.UTC()
		add(part, "forward").HeldSince = &t
	}
	receipts := s.receipts.Progress()
	for _, id := range order {
		p := byID[id]
		label := map[string]string{"stream_part": id}
		p.MessagesIn = uint64(m.value("tributary_overlay_messages_in_total", label))
		p.MessagesOut = uint64(m.value("tributary_overlay_messages_out_total", label))
		if (p.MessagesOut > 0 || len(p.Roles) == 0) && !slices.Contains(p.Roles, "forward") {
			p.Roles = append(p.Roles, "forward") // joined by the forwarder for this gateway's messages
		}
		p.Drops = m.byLabel("tributary_overlay_drops_total", "reason", label)
		p.Receipts = statusReceipts(receipts[id])
	}
	slices.Sort(order)
	out := make([]statuspage.Partition, len(order))
	for i, id := range order {
		out[i] = *byID[id]
	}
	return out
}

func statusReceipts(byReceiver map[string]map[string]streamr.MessageRef) map[string]map[string]statuspage.Ref {
	out := make(map[string]map[string]statuspage.Ref, len(byReceiver))
	for receiver, chains := range byReceiver {
		c := make(map[string]statuspage.Ref, len(chains))
		for chain, ref := range chains {
			c[chain] = statuspage.Ref{Timestamp: ref.Timestamp, SequenceNumber: ref.SequenceNumber}
		}
		out[receiver] = c
	}
	return out
}

// statusNodes is the explorer's nodes: this gateway, its connected peers
// and the DHT providers of its partitions, each with the partitions it
// carries with this gateway.
func (s *system) statusNodes(self statuspage.Identity, parts []statuspage.Partition) []statuspage.Node {
	carried := map[string][]string{} // peer → partitions
	providers := map[string]bool{}
	var selfParts []string
	for _, p := range parts {
		selfParts = append(selfParts, p.ID)
		for _, id := range p.PeerIDs {
			carried[id] = append(carried[id], p.ID)
		}
		for _, id := range p.Providers {
			if id != self.PeerID && !slices.Contains(carried[id], p.ID) {
				carried[id] = append(carried[id], p.ID)
			}
			providers[id] = true
		}
	}
	nodes := []statuspage.Node{{ID: self.PeerID, Kind: "self", Addrs: self.Addrs, Partitions: nonNil(selfParts), Connected: true}}
	seen := map[string]bool{self.PeerID: true}
	for _, pi := range s.node.ConnectedPeerInfo() {
		seen[pi.ID] = true
		nodes = append(nodes, statuspage.Node{ID: pi.ID, Kind: "peer", Addrs: nonNil(pi.Addrs), Partitions: nonNil(carried[pi.ID]),
			Connected: true, Protected: pi.Protected, Score: pi.Score})
	}
	var others []string
	for id := range providers {
		if !seen[id] {
			others = append(others, id)
		}
	}
	slices.Sort(others)
	for _, id := range others {
		nodes = append(nodes, statuspage.Node{ID: id, Kind: "provider", Addrs: []string{}, Partitions: carried[id]})
	}
	return nodes
}

// statusStreamrNetwork is the Streamr Network client's proxies; not
// configured without [streamr_network].
func (s *system) statusStreamrNetwork() statuspage.StreamrNetwork {
	switch {
	case s.streamrProxies != nil: // a test's
		return statuspage.StreamrNetwork{Configured: true, Proxies: s.streamrProxies()}
	case s.sn == nil:
		return statuspage.StreamrNetwork{Proxies: []streamr.ProxyState{}}
	}
	return statuspage.StreamrNetwork{Configured: true, Proxies: s.sn.Proxies()}
}

// proxyNodes are the Streamr Network proxies as the explorer's nodes.
func proxyNodes(proxies []streamr.ProxyState) []statuspage.Node {
	out := make([]statuspage.Node, len(proxies))
	for i, p := range proxies {
		out[i] = statuspage.Node{ID: p.URL, Kind: "proxy", Addrs: []string{p.URL}, Partitions: []string{}, Connected: p.State == streamr.ProxyConnected}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func statusOrderers(m metricIndex) []statuspage.Orderer {
	names := map[string]bool{}
	for _, metric := range m["tributary_order_delivered_total"] {
		names[labelValue(metric, "orderer")] = true
	}
	var out []statuspage.Orderer
	for name := range names {
		l := map[string]string{"orderer": name}
		out = append(out, statuspage.Orderer{
			Name:      name,
			Delivered: uint64(m.value("tributary_order_delivered_total", l)),
			Gaps:      uint64(m.value("tributary_order_gaps_total", l)),
			Filled:    uint64(m.value("tributary_order_filled_total", l)),
			Lost:      uint64(m.value("tributary_order_lost_total", l)),
		})
	}
	slices.SortFunc(out, func(a, b statuspage.Orderer) int { return strings.Compare(a.Name, b.Name) })
	return nonNilOrderers(out)
}

func nonNilOrderers(o []statuspage.Orderer) []statuspage.Orderer {
	if o == nil {
		return []statuspage.Orderer{}
	}
	return o
}

// metricIndex is one gather of the registry: family name → its metrics.
type metricIndex map[string][]*dto.Metric

func gatherMetrics(g interface {
	Gather() ([]*dto.MetricFamily, error)
}) metricIndex {
	fams, _ := g.Gather() // a partial gather still has the families that worked
	m := make(metricIndex, len(fams))
	for _, f := range fams {
		m[f.GetName()] = f.GetMetric()
	}
	return m
}

// value sums the samples of name whose labels include labels.
func (m metricIndex) value(name string, labels map[string]string) float64 {
	total := 0.0
	for _, metric := range m[name] {
		if hasLabels(metric, labels) {
			total += sampleValue(metric)
		}
	}
	return total
}

func (m metricIndex) sum(name string) float64 { return m.value(name, nil) }

// byLabel sums name's samples matching labels by the value of label.
func (m metricIndex) byLabel(name, label string, labels map[string]string) map[string]uint64 {
	out := map[string]uint64{}
	for _, metric := range m[name] {
		if hasLabels(metric, labels) {
			out[labelValue(metric, label)] += uint64(sampleValue(metric))
		}
	}
	return out
}

func hasLabels(metric *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		if labelValue(metric, k) != v {
			return false
		}
	}
	return true
}

func labelValue(metric *dto.Metric, name string) string {
	for _, l := range metric.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func sampleValue(metric *dto.Metric) float64 {
	switch {
	case metric.Counter != nil:
		return metric.GetCounter().GetValue()
	case metric.Gauge != nil:
		return metric.GetGauge().GetValue()
	case metric.Untyped != nil:
		return metric.GetUntyped().GetValue()
	}
	return 0
}
