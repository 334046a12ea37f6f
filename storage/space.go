package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// measureEvery bounds how stale the measured disk usage may get while
// appends are committed; appends in between are counted by their size.
const measureEvery = time.Second

// spaceTracker estimates the database's disk usage and the file system's
// free space: a periodic measurement plus the bytes admitted since.
type spaceTracker struct {
	dir string

	mu       sync.Mutex
	lsm      int64 // allocated bytes of LSM files (SSTs, memtable WALs, manifest)
	vlog     int64 // allocated bytes of value log files
	free     int64 // bytes available to us on the file system
	admitted int64 // bytes admitted since the measurement
	at       time.Time
}

// measure sums the allocated blocks of the database's files (the WAL and
// value log are sparse until written, so apparent sizes would overstate)
// and reads the file system's free space.
func (t *spaceTracker) measure() error {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return fmt.Errorf("measure storage dir: %w", err)
	}
	var lsm, vlog int64
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by compaction or GC meanwhile
		}
		if err != nil {
			return fmt.Errorf("measure storage dir: %w", err)
		}
		size := allocated(info)
		if strings.HasSuffix(e.Name(), ".vlog") {
			vlog += size
		} else {
			lsm += size
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(t.dir, &st); err != nil {
		return fmt.Errorf("statfs storage dir %s: %w", t.dir, err)
	}
	t.mu.Lock()
	t.lsm, t.vlog, t.free, t.admitted, t.at = lsm, vlog, int64(st.Bavail)*int64(st.Bsize), 0, time.Now()
	t.mu.Unlock()
	return nil
}

func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return info.Size()
}

// maybeMeasure measures if the last measurement is older than
// measureEvery, and reports whether it did.
func (t *spaceTracker) maybeMeasure(log *slog.Logger) bool {
	t.mu.Lock()
	stale := time.Since(t.at) >= measureEvery
	t.mu.Unlock()
	if !stale {
		return false
	}
	if err := t.measure(); err != nil {
		log.Warn("measure disk usage", "err", err)
		return false
	}
	return true
}

// usage returns the measured sizes.
func (t *spaceTracker) usage() (lsm, vlog int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lsm, t.vlog
}

// reserve admits n more bytes if the estimated usage stays within limit
// (0 = none) and the estimated free space stays at or above minFree (< 0 =
// unchecked). It returns ErrQuotaExceeded or ErrDiskFull otherwise.
func (t *spaceTracker) reserve(n, limit, minFree int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	used := t.lsm + t.vlog + t.admitted + n
	if minFree >= 0 && t.free-t.admitted-n < minFree {
		return fmt.Errorf("%w: %d bytes free on the file system of %s, %d kept in reserve", ErrDiskFull, t.free-t.admitted, t.dir, minFree)
	}
	if limit > 0 && used > limit {
		return fmt.Errorf("%w: %d bytes used of %d allowed", ErrQuotaExceeded, used-n, limit)
	}
	t.admitted += n
	return nil
}

// admit checks an append of size bytes against the quota and free space.
// Non-durable readings may use only 90% of the quota, so that QoS 0 is
// refused before QoS 1.
func (s *Store) admit(size int64, durable bool) error {
	limit := s.opts.QuotaBytes
	if !durable {
		limit -= limit / 10
	}
	err := s.space.reserve(size, limit, s.opts.MinFreeBytes)
	if err != nil && s.space.maybeMeasure(s.log) {
		// Space may have been freed since (retention, GC, other files).
		err = s.space.reserve(size, limit, s.opts.MinFreeBytes)
	}
	if err != nil {
		s.m.refused(err, durable)
	}
	return err
}
