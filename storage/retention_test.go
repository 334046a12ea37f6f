package storage

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// fillSigned appends and signs n readings of size bytes, with message
// timestamps ts0, ts0+1, …, and returns their total encoded size.
func fillSigned(t *testing.T, s *Store, n, size int, ts0 int64) int64 {
	t.Helper()
	var total int64
	payload := make([]byte, size)
	for done := 0; done < n; {
		batch := min(n-done, 256)
		var msgs []Signed
		for i := range batch {
			_, _ = rand.Read(payload)
			r := reading(testPart, "c", string(payload))
			if err := s.Append(context.Background(), r, i == batch-1); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, signedFor(t, *r, ts0+int64(done+i), 0, nil))
			total += int64(len(msgs[i].Encoded))
		}
		if err := s.CommitSigned(context.Background(), msgs, nil); err != nil {
			t.Fatal(err)
		}
		done += batch
	}
	return total
}

func TestRetention(t *testing.T) {
	const n, ts0 = 1000, 1_000_000
	tests := []struct {
		name     string
		opts     Options
		now      int64 // ms
		wantLeft func(msgBytes int64) int
	}{
		{"none", Options{}, ts0 + 1e9, func(int64) int { return n }},
		{"age keeps young", Options{Retention: time.Hour}, ts0 + n, func(int64) int { return n }},
		{"age", Options{Retention: time.Second}, ts0 + 1000 + 400, func(int64) int { return n - 400 }},
		{"age all", Options{Retention: time.Millisecond}, ts0 + 1e6, func(int64) int { return 0 }},
		{"bytes", Options{RetentionBytes: 100_000}, ts0, func(b int64) int { return int(100_000 / b) }},
		{"bytes and age", Options{RetentionBytes: 100_000, Retention: time.Second}, ts0 + 1000 + 900, func(int64) int { return 100 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := running(t, tc.opts)
			total := fillSigned(t, s, n, 200, ts0)
			s.maintain(context.Background(), time.UnixMilli(tc.now))
			logged, err := s.After(0, 2*n)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.wantLeft(total / n)
			if len(logged) != want {
				t.Fatalf("%d messages left, want %d", len(logged), want)
			}
			if want > 0 && logged[0].Pos != uint64(n-want+1) {
				t.Fatalf("oldest left at position %d, want %d: retention must delete from the head", logged[0].Pos, n-want+1)
			}
			var left int64
			for _, l := range logged {
				left += int64(len(l.Encoded))
			}
			if got := s.signedTotal(); got != left {
				t.Fatalf("signed bytes counter %d, stored %d", got, left)
			}
			count := 0
			if err := s.Messages(testPart, -1<<63, 1<<63-1, func([]byte) error { count++; return nil }); err != nil || count != want {
				t.Fatalf("index has %d messages, want %d (%v)", count, want, err)
			}
		})
	}
}

// TestRetentionReclaimsSpace checks that deleted messages give their disk
// space back through the normal schedule (retention, compaction, GC).
func TestRetentionReclaimsSpace(t *testing.T) {
	s := running(t, Options{RetentionBytes: 1 << 20})
	const ts0 = 1_000_000
	fillSigned(t, s, 40_000, 400, ts0)
	if err := s.space.measure(); err != nil {
		t.Fatal(err)
	}
	lsm, vlog := s.Usage()
	full := lsm + vlog
	// Keep the gateway running: new readings arrive, flush and compaction
	// carry the deletions down the tree.
	s.maintain(context.Background(), time.UnixMilli(ts0))
	for round := range 4 {
		fillSigned(t, s, 2000, 400, ts0+int64(40_000+round*2000))
		s.maintain(context.Background(), time.UnixMilli(ts0))
	}
	lsm, vlog = s.Usage()
	t.Logf("usage with ~17 MB of messages: %d B; after retention to 1 MiB: lsm %d B, vlog %d B", full, lsm, vlog)
	if lsm+vlog > full/2 {
		t.Fatalf("usage %d B after retention, %d B before: space not reclaimed\n%s", lsm+vlog, full, strings.TrimSpace(s.db.LevelsToString()))
	}
}
