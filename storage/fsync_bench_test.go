package storage

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkFsync is the disk's physical floor for a group commit: it
// appends records of one signed reading's WAL bytes to a file sized
// up front and fdatasyncs after each, as a synced commit of one reading does.
// It reports the sync latency (p50, p99: what a PUBACK must wait at
// least) and the bytes this process caused to be written per sync
// (/proc/self/io): a partly filled 4 KiB page rewritten plus the record.
// scripts/bench-ingest.sh runs it beside the gateway to state the
// physical limit of bytes per reading at the measured readings per commit.
func BenchmarkFsync(b *testing.B) {
	const record = 512
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "fsync"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	// Sized up front and sparse, as Badger's WAL files are (ftruncate).
	if err := f.Truncate(64 << 20); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, record)
	lat := make([]time.Duration, 0, b.N)
	before := writeBytes(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.WriteAt(buf, int64(i%(64<<20/record))*record); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	written := writeBytes(b) - before
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(written)/float64(b.N), "written-B/sync")
	b.ReportMetric(record, "record-B")
}
