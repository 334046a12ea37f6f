package broker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is a snapshot of the broker's counters since New.
type Stats struct {
	ClientsConnected  int64                 // network clients connected now
	Received          uint64                // PUBLISH packets from network clients
	Accepted          uint64                // of those, accepted by the Handler
	Rejected          map[ReasonCode]uint64 // of those, rejected, by reason (only non-zero entries)
	WaitFailed        uint64                // accepted, but Verdict.Wait failed: not acknowledged
	AuthFailures      uint64                // CONNECTs refused for bad credentials
	SubscribeRefused  uint64                // SUBSCRIBE filters refused (ACL or invalid filter)
	ReloadDisconnects uint64                // clients disconnected by Reload: credentials no longer valid
	Refused           map[string]uint64     // CONNECTs, SUBSCRIBEs and connections refused or cut by a protective rule, by rule (non-zero only)
}

// refusal is a protective rule that refuses a CONNECT, SUBSCRIBE or PUBLISH, or cuts a client.
type refusal int

const (
	refuseTakeover    refusal = iota // client ID of another user's session
	refuseWillACL                    // Will topic outside the user's publish ACL
	refuseSlowClient                 // a client that does not read what it is sent
	refuseTopicLength                // topic or filter longer than the limit
	refuseTopicLevels                // topic or filter deeper than the limit
	refuseUserConns                  // connections per user at the limit
	refuseSourceConns                // connections per source address at the limit
	refuseAuthBackoff                // password check delayed (backoff after failures) or refused (checks queue full)
	refuseSessions                   // stored sessions at the limit
	refuseInvalidUTF8                // packet with a malformed UTF-8 string (topic, filter, ID)
	numRefusals
)

// String is the rule's metric label.
func (r refusal) String() string {
	return [...]string{
		refuseTakeover:    "session_takeover",
		refuseWillACL:     "will_not_authorized",
		refuseSlowClient:  "slow_client",
		refuseTopicLength: "topic_too_long",
		refuseTopicLevels: "topic_too_deep",
		refuseUserConns:   "connections_per_user",
		refuseSourceConns: "connections_per_source",
		refuseAuthBackoff: "auth_backoff",
		refuseSessions:    "sessions_full",
		refuseInvalidUTF8: "invalid_utf8",
	}[r]
}

// counters are updated on client goroutines and read by Stats and the Prometheus collector.
type counters struct {
	received, accepted, waitFailed, authFailures, subscribeRefused atomic.Uint64
	reloadDisconnects                                              atomic.Uint64
	refused                                                        [numRefusals]atomic.Uint64
	rejected                                                       [256]atomic.Uint64 // by ReasonCode
}

func (c *counters) snapshot(clients int64) Stats {
	s := Stats{
		ClientsConnected:  clients,
		Received:          c.received.Load(),
		Accepted:          c.accepted.Load(),
		WaitFailed:        c.waitFailed.Load(),
		AuthFailures:      c.authFailures.Load(),
		SubscribeRefused:  c.subscribeRefused.Load(),
		ReloadDisconnects: c.reloadDisconnects.Load(),
		Rejected:          map[ReasonCode]uint64{},
		Refused:           map[string]uint64{},
	}
	for r := range numRefusals {
		if n := c.refused[r].Load(); n > 0 {
			s.Refused[r.String()] = n
		}
	}
	for i := range c.rejected {
		if n := c.rejected[i].Load(); n > 0 {
			s.Rejected[ReasonCode(i)] = n
		}
	}
	return s
}

// collector exposes Stats to Prometheus. It reads the same atomics as Stats, so the two never
// disagree and the hot path pays for nothing but an atomic add.
type collector struct {
	stats func() Stats

	clients, received, accepted, rejected, waitFailed, authFailures, subscribeRefused *prometheus.Desc
	reloadDisconnects, refused                                                        *prometheus.Desc
}

// desc describes one broker metric: tributary_broker_<name>.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("tributary", "broker", name), help, labels, nil)
}

func newCollector(stats func() Stats) *collector {
	d := desc
	return &collector{
		stats:             stats,
		clients:           d("clients_connected", "MQTT network clients connected now."),
		received:          d("publish_received_total", "PUBLISH packets received from network clients."),
		accepted:          d("publish_accepted_total", "PUBLISH packets accepted by the handler."),
		rejected:          d("publish_rejected_total", "PUBLISH packets rejected, by MQTT reason.", "reason"),
		waitFailed:        d("publish_wait_failed_total", "Accepted PUBLISH packets left unacknowledged because they were not stored durably."),
		authFailures:      d("auth_failures_total", "CONNECT packets refused for bad credentials."),
		subscribeRefused:  d("subscribe_refused_total", "SUBSCRIBE filters refused."),
		refused:           d("refused_total", "CONNECTs, SUBSCRIBEs and connections refused or cut by a protective rule, by rule.", "rule"),
		reloadDisconnects: d("reload_disconnects_total", "Clients disconnected by a reload (SIGHUP) because their user was removed or its password changed."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.clients, c.received, c.accepted, c.rejected, c.waitFailed, c.authFailures, c.subscribeRefused, c.reloadDisconnects, c.refused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(s.ClientsConnected))
	ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(s.Received))
	ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(s.Accepted))
	ch <- prometheus.MustNewConstMetric(c.waitFailed, prometheus.CounterValue, float64(s.WaitFailed))
	ch <- prometheus.MustNewConstMetric(c.authFailures, prometheus.CounterValue, float64(s.AuthFailures))
	ch <- prometheus.MustNewConstMetric(c.subscribeRefused, prometheus.CounterValue, float64(s.SubscribeRefused))
	ch <- prometheus.MustNewConstMetric(c.reloadDisconnects, prometheus.CounterValue, float64(s.ReloadDisconnects))
	for r := range numRefusals {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.Refused[r.String()]), r.String())
	}
	// Every known reason is exported, zero included, so that rate() works from the first rejection.
	for _, code := range reasonCodes[1:] {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(s.Rejected[code]), code.String())
	}
}
