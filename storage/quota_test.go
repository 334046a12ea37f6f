package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// acceptUntil appends 1 KiB readings, alternating durable and not, until
// a durable one is refused, and returns the accepted payloads and the
// first refusal of each kind (by attempt number).
func acceptUntil(t *testing.T, s *Store, limit int) (accepted []string, firstQoS0, firstQoS1 int, err error) {
	firstQoS0, firstQoS1 = -1, -1
	pad := strings.Repeat("x", 1000)
	for i := range limit {
		durable := i%2 == 1
		p := payloadN(i) + pad
		err = s.Append(context.Background(), reading(testPart, "c", p), durable)
		switch {
		case err == nil:
			accepted = append(accepted, p)
		case !durable && firstQoS0 < 0:
			firstQoS0 = i
		case durable:
			return accepted, firstQoS0, i, err
		}
	}
	t.Fatalf("no durable append refused in %d attempts", limit)
	return
}

// TestQuota checks the admission estimate against the quota: QoS 0 is
// refused from 90% of it, QoS 1 from 100%. The periodic measurement of the
// disk (every second) is stopped: it replaces the estimate, which counts
// only the readings' bytes, with the files' allocated blocks, and one that
// fell between the two thresholds would eat into the 10% left to QoS 1 by
// the index and WAL bytes the estimate leaves out (on a slow machine, QoS 0
// went only 97 attempts before QoS 1). The test measures once at the end
// instead, to bound how far the estimate is from the disk.
func TestQuota(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	lsm, vlog := s.Usage()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	quota := lsm + vlog + 1<<20
	s, err = Open(Options{Dir: dir, QuotaBytes: quota, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	s.space.every = time.Hour // before Run: no measurement during the test
	runStore(t, s)
	accepted, firstQoS0, firstQoS1, err := acceptUntil(t, s, 10_000)
	if !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("durable refusal: %v, want ErrQuotaExceeded", err)
	}
	t.Logf("quota %d B: QoS 0 refused from attempt %d, QoS 1 from %d (%v)", quota, firstQoS0, firstQoS1, err)
	// 10% of the quota is ~100 durable readings, ~200 attempts.
	if firstQoS0 < 0 || firstQoS0 > firstQoS1-150 {
		t.Fatalf("QoS 0 first refused at attempt %d, QoS 1 at %d: QoS 0 must go well before", firstQoS0, firstQoS1)
	}
	if err := s.space.measure(); err != nil {
		t.Fatal(err)
	}
	lsm, vlog = s.Usage()
	t.Logf("on disk at the refusal: %d B, %.2f× the quota", lsm+vlog, float64(lsm+vlog)/float64(quota))
	if lsm+vlog > quota+quota/4 {
		t.Errorf("%d B on disk at the quota's refusal, more than 1.25× the quota %d", lsm+vlog, quota)
	}
	if got := counterValue(t, s.m.refusals.WithLabelValues("quota", "false")); got == 0 {
		t.Fatal("no QoS 0 quota refusals counted")
	}
	// Signing is never refused, and every accepted reading is kept.
	pend, err := s.Pending(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != len(accepted) {
		t.Fatalf("%d readings stored, %d accepted", len(pend), len(accepted))
	}
	if err := s.CommitSigned(context.Background(), []Signed{signedFor(t, pend[0], 1, 0, nil)}, nil); err != nil {
		t.Fatalf("signing at quota: %v", err)
	}
}

// TestDiskFull fills a small tmpfs: appends must fail with ErrDiskFull
// before the file system is full, keep every acknowledged reading, and
// work again once space is freed.
func TestDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "40m")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 12<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "db")
	opts := Options{Dir: dir, MinFreeBytes: 12 << 20}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	accepted, _, _, err := acceptUntil(t, s, 1_000_000)
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("durable refusal: %v, want ErrDiskFull naming %s", err, dir)
	}
	t.Logf("%d readings accepted, then: %v", len(accepted), err)
	cancel()
	if err := errors.Join(<-ran, s.Close()); err != nil {
		t.Fatal(err)
	}
	s, err = Open(opts)
	if err != nil {
		t.Fatalf("reopen on a nearly full disk: %v", err)
	}
	pend, err := s.Pending(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != len(accepted) {
		t.Fatalf("%d readings stored, %d accepted", len(pend), len(accepted))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s2 := running(t, opts)
	if err := s2.Append(context.Background(), reading(testPart, "c", "after"), true); err != nil {
		t.Fatalf("append after freeing space: %v", err)
	}
}
