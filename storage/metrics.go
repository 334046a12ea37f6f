package storage

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus collectors. They exist (unregistered)
// even without a Registerer, so the code never checks for nil.
type metrics struct {
	commitSeconds prometheus.Histogram // one group commit, all its synced txns
	durableWait   prometheus.Histogram // one durable reading, queued to committed
	signSeconds   prometheus.Histogram // one CommitSigned txn
	batchSize     prometheus.Histogram // readings per synced txn
	commits       prometheus.Counter   // synced group-commit txns
	refusals      *prometheus.CounterVec
	diskWaits     *prometheus.CounterVec // signing or retention held off a nearly full disk
	batches       *prometheus.CounterVec // group-commit batches by how they were stored
	windows       *prometheus.CounterVec // commit windows by how they ended

	unackedDropped prometheus.Counter // deleted before a required receiver acknowledged them
}

func newMetrics(reg prometheus.Registerer, s *Store) (*metrics, error) {
	m := &metrics{
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tributary_storage_commit_seconds",
			Help:    "Time to commit one batch of readings, fsync included.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		durableWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tributary_storage_durable_wait_seconds",
			Help: "Time from queueing a durable reading to its synced commit (window, signing in the commit, the commit before it, fsync): what a PUBACK waits for in storage.",
			// 100 µs to 3.3 s, four buckets per doubling, for p99s of a few ms
			Buckets: prometheus.ExponentialBuckets(100e-6, 1.1892, 61),
		}),
		signSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tributary_storage_commit_signed_seconds",
			Help:    "Time to commit one batch of signed messages, fsync included.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tributary_storage_commit_batch_readings",
			Help:    "Readings per synced group-commit transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_storage_commits_total",
			Help: "Synced group-commit transactions of readings.",
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_storage_batches_total",
			Help: "Group-commit batches by how they were stored: presigned, or pending because a reading was pending, the presigner declined or failed, or the batch was too large.",
		}, []string{"stored"}),
		windows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_storage_commit_windows_total",
			Help: "Commit windows by how they ended: filled (a page's worth of readings gathered), expired, or skipped (arrivals too sparse to wait for).",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_storage_refused_appends_total",
			Help: "Appends refused for lack of space, by reason (quota, disk) and durability.",
		}, []string{"reason", "durable"}),
		diskWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_storage_disk_full_waits_total",
			Help: "Signing commits and retention passes held off because free space was below half of min_free, by writer (sign, retention).",
		}, []string{"writer"}),
		unackedDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_storage_unacknowledged_dropped_total",
			Help: "Messages retention deleted before a required receiver acknowledged them, because the disk quota forced it.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_storage_lsm_bytes", Help: "Disk space used by the LSM tree and WAL.",
		}, func() float64 { lsm, _ := s.space.usage(); return float64(lsm) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_storage_vlog_bytes", Help: "Disk space used by the value log.",
		}, func() float64 { _, vlog := s.space.usage(); return float64(vlog) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_storage_fs_free_bytes", Help: "Free space on the file system of the database, as last checked.",
		}, func() float64 { return float64(s.space.lastFree()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_storage_pending_readings", Help: "Readings stored and not yet signed.",
		}, func() float64 { return float64(s.pending.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_storage_signed_bytes", Help: "Encoded bytes of stored signed messages.",
		}, func() float64 { return float64(s.signedTotal()) }),
	}
	for _, c := range append(gauges, m.commitSeconds, m.durableWait, m.signSeconds, m.batchSize, m.commits, m.batches, m.windows, m.refusals, m.diskWaits, m.unackedDropped) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeCommit(d time.Duration) { m.commitSeconds.Observe(d.Seconds()) }

func (m *metrics) refused(err error, durable bool) {
	reason := "quota"
	if errors.Is(err, ErrDiskFull) {
		reason = "disk"
	}
	m.refusals.WithLabelValues(reason, strconv.FormatBool(durable)).Inc()
}
