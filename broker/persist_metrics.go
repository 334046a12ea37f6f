package broker

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// SessionStats is a snapshot of the persistent-session counters.
type SessionStats struct {
	Sessions           int    // sessions known (connected or not) with queued state
	Queued             int    // messages queued or in flight, all sessions
	DroppedForMessages uint64 // oldest messages dropped because a session held max messages
	DroppedForBytes    uint64 // oldest messages dropped because a session held max bytes
	DroppedForTotal    uint64 // oldest messages dropped because all sessions held max queued bytes
	QueuedBytes        int64  // what all sessions hold, as counted for the total limit
	Replayed           uint64 // messages resent in order to reconnected sessions
	CommitFailures     uint64 // failed session-store commits (each retried)
}

// SessionStats returns the persistent-session counters.
func (b *Broker) SessionStats() SessionStats {
	h := b.sessions
	h.mu.Lock()
	st := SessionStats{Sessions: len(h.byID), QueuedBytes: h.total}
	for _, s := range h.byID {
		st.Queued += s.order.Len()
	}
	h.mu.Unlock()
	st.DroppedForMessages = h.stats.droppedMessages.Load()
	st.DroppedForBytes = h.stats.droppedBytes.Load()
	st.DroppedForTotal = h.stats.droppedTotal.Load()
	st.Replayed = h.stats.replayed.Load()
	st.CommitFailures = h.commit.failures.Load()
	return st
}

// PublishMarked is Publish with WithMark(key, mark): a subscriber that delivers into the broker
// records how far it got atomically with what it delivered (bridge.LocalBroker).
func (b *Broker) PublishMarked(topic string, payload []byte, qos byte, key string, mark []byte) error {
	return b.Publish(topic, payload, qos, WithMark(key, mark))
}

// Mark returns the value last stored under key by a Publish with WithMark, as durable as the
// messages it was published with.
func (b *Broker) Mark(key string) ([]byte, bool, error) {
	store := b.sessions.commit.store
	if store == nil {
		return nil, false, nil
	}
	var val []byte
	found := false
	err := store.ScanSessions(prefixMark+key, func(k string, v []byte) error {
		if strings.TrimPrefix(k, prefixMark) == key {
			val, found = append([]byte(nil), v...), true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("broker: read mark %q: %w", key, err)
	}
	return val, found, nil
}

// Sync waits until every message published so far is held durably by its persistent sessions
// (and every mark is stored).
func (b *Broker) Sync(ctx context.Context) error {
	if !b.sessions.commit.wait(ctx, b.sessions.commit.current()) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("broker: sync sessions: %w", err)
		}
		return fmt.Errorf("broker: sync sessions: %w", ErrNotRunning)
	}
	return nil
}

type sessionCollector struct {
	stats                                                          func() SessionStats
	sessions, queued, queuedBytes, dropped, replayed, commitFailed *prometheus.Desc
}

func newSessionCollector(stats func() SessionStats) *sessionCollector {
	d := desc
	return &sessionCollector{
		stats:        stats,
		sessions:     d("sessions", "MQTT sessions with broker state (connected or persistent)."),
		queued:       d("session_queued_messages", "QoS 1/2 messages queued or in flight to MQTT sessions."),
		queuedBytes:  d("session_queued_bytes", "Bytes held by all MQTT sessions, as counted for max_queued_bytes."),
		dropped:      d("session_dropped_total", "Oldest queued messages dropped because a session, or all together, reached a limit.", "limit"),
		replayed:     d("session_replayed_total", "Queued messages resent in order to reconnected sessions."),
		commitFailed: d("session_commit_failures_total", "Failed writes of session state to storage (each retried)."),
	}
}

// Describe implements prometheus.Collector.
func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.queued, c.queuedBytes, c.dropped, c.replayed, c.commitFailed} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(s.Sessions))
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(s.Queued))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.DroppedForMessages), "messages")
	ch <- prometheus.MustNewConstMetric(c.queuedBytes, prometheus.GaugeValue, float64(s.QueuedBytes))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.DroppedForBytes), "bytes")
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.DroppedForTotal), "total_bytes")
	ch <- prometheus.MustNewConstMetric(c.replayed, prometheus.CounterValue, float64(s.Replayed))
	ch <- prometheus.MustNewConstMetric(c.commitFailed, prometheus.CounterValue, float64(s.CommitFailures))
}
