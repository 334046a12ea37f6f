package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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
	dir   string
	every time.Duration // how often maybeMeasure measures; 0 means measureEvery

	mu       sync.Mutex
	lsm      int64 // allocated bytes of LSM files (SSTs, memtable WALs, manifest)
	vlog     int64 // allocated bytes of value log files
	free     int64 // bytes available to us on the file system
	admitted int64 // bytes admitted since the measurement
	at       time.Time

	minFree     int64     // Options.MinFreeBytes; < 0 unchecked
	checkedAt   time.Time // last statfs by secure
	dirModified time.Time // the directory's mtime when files were last preallocated
	noFallocate bool      // the file system cannot preallocate
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
		switch {
		case e.Name() == reserveName:
			// Our margin for Badger, not data: outside the quota.
		case strings.HasSuffix(e.Name(), ".vlog"):
			vlog += size
		default:
			lsm += size
		}
	}
	free, err := statfsFree(t.dir)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.lsm, t.vlog, t.free, t.admitted, t.at = lsm, vlog, free, 0, time.Now()
	t.mu.Unlock()
	return nil
}

func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return info.Size()
}

// Badger writes its value log, memtable WALs and tables through mmap'd
// files it creates sparse (ftruncate); a store into a page with no block
// behind it on a full file system is a SIGBUS, not an error. So when free
// space runs low, secure preallocates (fallocate) the files Badger is
// writing into, and refuses all our writes once the file system could not
// take one more rotation of them.
//
// preallocateBelow is the free space, as a multiple of MinFreeBytes, below
// which the writable files are preallocated; above it another writer would
// have to take that much between two of our checks. criticalFraction of
// MinFreeBytes is what signing keeps: below it CommitSigned and retention
// stop too, so Badger only still needs blocks for the flushes and
// compactions already under way.
const (
	preallocateBelow = 4
	criticalFraction = 2 // MinFreeBytes / 2
)

// flushReserve is the size of the reserve file: Badger's Close flushes the
// memtable into a new table (mmap'd, and unavoidable), so the reserve is
// released just before it on a full disk.
const (
	reserveName  = "tributary-flush-reserve"
	flushReserve = 2 * memTableSize
)

// holdReserve creates the reserve file with blocks allocated, if it is
// missing and there is room for it.
func (t *spaceTracker) holdReserve() {
	path := filepath.Join(t.dir, reserveName)
	t.mu.Lock()
	skip := t.minFree < 0 || t.noFallocate || t.free < t.minFree
	t.mu.Unlock()
	if skip {
		return
	}
	if info, err := os.Stat(path); err == nil && info.Size() == flushReserve {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, flushReserve)
	_ = f.Close()
	if err != nil {
		_ = os.Remove(path) // no room (or no fallocate): try again later
	}
}

// releaseReserve deletes the reserve file if free space is too low for a
// memtable flush, and reports whether it did.
func (t *spaceTracker) releaseReserve() bool {
	free, err := statfsFree(t.dir)
	if err != nil || free >= 2*flushReserve {
		return false
	}
	return os.Remove(filepath.Join(t.dir, reserveName)) == nil
}

// secure checks the file system before a write to Badger: it refreshes the
// free space (statfs), preallocates Badger's writable files when it is low
// and new ones have appeared (the directory's mtime changed), and returns
// ErrDiskFull if not even signing may write.
func (t *spaceTracker) secure() error {
	if t.minFree < 0 || t.roomy() {
		return nil
	}
	free, err := statfsFree(t.dir)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.free, t.checkedAt = free, time.Now()
	if free < t.minFree/criticalFraction {
		return fmt.Errorf("%w: %d bytes free on the file system of %s, below the %d that signing keeps", ErrDiskFull, free, t.dir, t.minFree/criticalFraction)
	}
	if free >= preallocateBelow*t.minFree || t.noFallocate {
		return nil
	}
	info, err := os.Stat(t.dir)
	if err != nil {
		return fmt.Errorf("stat storage dir: %w", err)
	}
	if info.ModTime().Equal(t.dirModified) {
		return nil
	}
	if err := t.preallocate(); err != nil {
		return err
	}
	t.dirModified = info.ModTime()
	return nil
}

// roomyRecheck is how long secure trusts a free space of at least
// preallocateBelow × MinFreeBytes: another writer would have to fill that
// much (256 MiB by default) faster than 25 GB/s to catch us out, and a
// statfs per append would cost ingestion a few percent on a Pi.
const roomyRecheck = 10 * time.Millisecond

func (t *spaceTracker) roomy() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.free >= preallocateBelow*t.minFree && time.Since(t.checkedAt) < roomyRecheck
}

// preallocSlack is preallocated beyond the size at which Badger rotates a
// file: the batch that crosses the size still goes into it.
const preallocSlack = 2 << 20

// preallocate allocates blocks for the part of the newest value log file
// and memtable WAL that Badger will write before it rotates them (it
// creates them sparse at twice that size, and truncates them to what they
// hold when done).
func (t *spaceTracker) preallocate() error {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return fmt.Errorf("preallocate in storage dir: %w", err)
	}
	var vlog, mem string
	for _, e := range entries { // names are zero-padded file IDs: newest last
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".vlog"):
			vlog = name
		case strings.HasSuffix(name, ".mem"):
			mem = name
		}
	}
	for _, f := range []struct {
		name  string
		limit int64
	}{{vlog, valueLogFileSize + preallocSlack}, {mem, memTableSize + preallocSlack}} {
		if f.name == "" {
			continue
		}
		err := fallocate(filepath.Join(t.dir, f.name), f.limit)
		switch {
		case errors.Is(err, syscall.EOPNOTSUPP):
			t.noFallocate = true
			return nil
		case errors.Is(err, syscall.ENOSPC):
			return fmt.Errorf("%w: no room on the file system of %s to preallocate %s", ErrDiskFull, t.dir, f.name)
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	return nil
}

// fallocate gives blocks to the first limit bytes of path (at most its
// length).
func fallocate(path string, limit int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || info.Size() == 0 {
		return err
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, min(info.Size(), limit)); err != nil {
		return fmt.Errorf("fallocate %s: %w", path, err)
	}
	return nil
}

func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs storage dir %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// CheckFree returns ErrDiskFull if the file system holding dir (or its
// nearest existing parent) has less than minFree bytes available (0 means
// DefaultMinFreeBytes, negative disables the check): Open refuses then,
// since Badger's start-up writes would fault on a full disk.
func CheckFree(dir string, minFree int64) error {
	if minFree == 0 {
		minFree = DefaultMinFreeBytes
	}
	if minFree < 0 {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		free, err := statfsFree(d)
		if errors.Is(err, syscall.ENOENT) && d != filepath.Dir(d) {
			continue
		}
		if err != nil {
			return err
		}
		if free < minFree {
			return fmt.Errorf("%w: %d bytes free on the file system of %s, %d needed to open the database", ErrDiskFull, free, dir, minFree)
		}
		return nil
	}
}

// maybeMeasure measures if the last measurement is older than every, and
// reports whether it did.
func (t *spaceTracker) maybeMeasure(log *slog.Logger) bool {
	every := t.every
	if every == 0 {
		every = measureEvery
	}
	t.mu.Lock()
	stale := time.Since(t.at) >= every
	t.mu.Unlock()
	if !stale {
		return false
	}
	if err := t.measure(); err != nil {
		log.Warn("measure disk usage", "err", err)
		return false
	}
	t.holdReserve()
	return true
}

// lastFree returns the free space as last checked.
func (t *spaceTracker) lastFree() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.free
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
	if err := s.space.secure(); err != nil {
		s.m.refused(err, durable)
		return err
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
