package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero Options fields.
const (
	DefaultGCInterval   = 5 * time.Minute
	DefaultMaxBatch     = 512
	DefaultMinFreeBytes = 64 << 20

	// MaxReadingBytes bounds one encoded reading (payload plus about 40
	// bytes of fields); the value log file size must hold several.
	MaxReadingBytes = 1 << 20
)

// Pi-sized Badger settings, from "low-mem A" in perf-baselines.md §2.
const (
	// memTableSize: each memtable's arena and the table builder that
	// flushes it (Badger pools builders and keeps them) are live heap, most
	// of a gateway's heap at 2,000 readings/s with 4 MB memtables. Badger
	// caps a transaction at 15 % of a memtable (157 kB here): every writer
	// whose batch depends on its input splits it (txnSplit).
	memTableSize     = 1 << 20
	valueLogFileSize = 16 << 20
	// valueThreshold: values of at least this many bytes go to the value
	// log, smaller ones stay in the LSM tree (a 200-byte reading's ~390-byte
	// message does). Keeping signed messages in the value log instead
	// (threshold 64) wrote more per reading at 2,000/s (4.0× against 3.2×
	// the signed bytes: every synced commit then rewrites a partly filled
	// page of two files), less at full load over 200,000 readings (3.4×
	// against 4.1×: no compaction of values); TestMeasureWriteAmplification.
	// TestSigningBatchFitsTransaction checks that a signing batch of
	// messages just below it is committed.
	valueThreshold = 1 << 10
	// level0Tables (low-mem A has 2) is raised to 32: every L0→L1
	// compaction rewrites the whole overlapping L1 range, and each L0 table
	// spans the whole key space (counters to readings), so fewer, larger L0
	// compactions write less (5.9× → 4.8× signed bytes at 2000 readings/s
	// with 8 tables of 4 MB). 32 tables of 1 MB hold as much; 16 made a
	// backlog drain cost B more CPU per reading (BENCHMARKS "Session 7 — txn").
	level0Tables = 32
	// baseLevelSize (Badger's default 10 MB) picks the level L0 compacts
	// into, and baseTableSize the size of the tables compactions write.
	// Every L0 table spans the whole key space, so an L0 compaction
	// rewrites that whole level, building its output with up to 8 + splits
	// table builders in flight (fixed in Badger), each holding a table's raw
	// and compressed blocks: 60–92 MB of live heap on A after 30–90 s at
	// 2,000 readings/s with 10 MB / 1 MB. At 2 MB the base level stays small
	// and is pushed down by compactions of a few tables; 256 KiB tables make
	// each builder a quarter the size. A alone at 2,000/s: peak RSS 89 MB
	// against main's 121 after 90 s and 74 after 60 s (main 103–117), live
	// heap max 38 / 25 MB against 60–92, so the GC stays off the then 40 MiB
	// limit; disk 3.49–3.59× the signed message, main 3.13–3.50× (BENCHMARKS
	// "Session 8 — compact"). 8 or 4 L0 tables instead made the heap worse
	// (compaction nearly all the time).
	baseLevelSize = 2 << 20
	baseTableSize = 256 << 10
)

// Options configure a Store. The zero value of every field but Dir is usable.
type Options struct {
	Dir string // database directory, created if missing; required

	// QuotaBytes caps the database's on-disk size (LSM tree and value log).
	// Append refuses durable readings with ErrQuotaExceeded once the size
	// would exceed it, and non-durable (QoS 0) readings from 90% of it, so
	// QoS 0 goes first. Signing (CommitSigned) is never refused for quota. 0 means
	// unlimited.
	QuotaBytes int64

	// MinFreeBytes is the free space Append keeps on the file system: below
	// it every append fails with ErrDiskFull, and Open refuses to open the
	// database. Badger writes through memory-mapped files, where running
	// out of space is a fatal SIGBUS rather than an error, so the margin
	// must cover a memtable flush, a value log file and compaction output.
	// Below 4× it the files Badger is writing are preallocated (counted as
	// used), so another writer filling the disk cannot leave them without
	// blocks; below half of it signing and retention stop as well. 0 means
	// DefaultMinFreeBytes; negative disables the checks.
	MinFreeBytes int64

	Retention      time.Duration // delete signed messages older than this (by message timestamp); 0 keeps them
	RetentionBytes int64         // delete the oldest signed messages while their encoded total exceeds this; 0 = no limit
	GCInterval     time.Duration // period of retention and value-log GC; 0 means DefaultGCInterval
	MaxBatch       int           // most readings per group commit; 0 means DefaultMaxBatch

	// CommitWindow is the longest the group committer lets readings
	// gather after the first one arrives, before it commits them. Every
	// synced commit rewrites the last, partly filled page of the
	// write-ahead log, so at moderate rates a few readings per commit cost
	// a 4 KiB page each. The window ends early once two pages' worth
	// of readings is queued, and is skipped while fewer than one more
	// reading is expected within it (sparse arrivals gain nothing). 0
	// commits at once.
	CommitWindow time.Duration

	// Guard, if set, keeps messages the required receivers have not
	// acknowledged: retention stops at the first of them in log order,
	// unless the database is over 90% of QuotaBytes (where readings start
	// to be refused). Then retention deletes unacknowledged messages too,
	// as many bytes as the excess, logs them at Error level and counts them
	// in tributary_storage_unacknowledged_dropped_total. Nil deletes by
	// Retention and RetentionBytes alone.
	Guard RetentionGuard

	Logger     *slog.Logger          // nil discards logs
	Registerer prometheus.Registerer // nil registers no metrics

	// valueThreshold overrides the Badger value threshold (tests and the
	// write-amplification measurement only).
	valueThreshold int64
	level0Tables   int                                 // overrides the L0 table count that triggers compaction
	memTableSize   int64                               // overrides the memtable size (tests: a tiny transaction limit)
	tune           func(badger.Options) badger.Options // measurement only: adjusts the Badger options last
}

func (o *Options) setDefaults() {
	if o.GCInterval == 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = DefaultMinFreeBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.level0Tables == 0 {
		o.level0Tables = level0Tables
	}
	if o.valueThreshold == 0 {
		o.valueThreshold = valueThreshold
	}
	if o.memTableSize == 0 {
		o.memTableSize = memTableSize
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("dir is empty"))
	}
	if o.QuotaBytes < 0 {
		errs = append(errs, fmt.Errorf("quota bytes %d is negative", o.QuotaBytes))
	}
	if o.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention %s is negative", o.Retention))
	}
	if o.RetentionBytes < 0 {
		errs = append(errs, fmt.Errorf("retention bytes %d is negative", o.RetentionBytes))
	}
	if o.GCInterval < 0 {
		errs = append(errs, fmt.Errorf("GC interval %s is negative", o.GCInterval))
	}
	if o.CommitWindow < 0 {
		errs = append(errs, fmt.Errorf("commit window %s is negative", o.CommitWindow))
	}
	if o.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("max batch %d is negative", o.MaxBatch))
	}
	return errors.Join(errs...)
}

func (o *Options) badgerOptions() badger.Options {
	bo := badger.DefaultOptions(o.Dir).
		WithLogger(badgerLogger{o.Logger}).
		WithSyncWrites(true).
		WithMetricsEnabled(false).
		WithMemTableSize(o.memTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(o.level0Tables).
		WithNumLevelZeroTablesStall(2 * o.level0Tables).
		WithBaseTableSize(baseTableSize).
		WithBlockCacheSize(4 << 20).
		WithIndexCacheSize(2 << 20).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(2).
		WithBaseLevelSize(baseLevelSize).
		WithDetectConflicts(false).
		WithValueThreshold(o.valueThreshold)
	if o.tune != nil {
		bo = o.tune(bo)
	}
	return bo
}

// badgerLogger routes Badger's printf-style logs to slog. Badger's Info
// lines (compaction, flushes) are routine, so they go to Debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger", "detail", fmt.Sprintf(f, a...))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger", "detail", fmt.Sprintf(f, a...))
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.log.Debug("badger", "detail", fmt.Sprintf(f, a...))
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug("badger", "detail", fmt.Sprintf(f, a...))
}
