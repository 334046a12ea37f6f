package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size at a temporary directory for the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// fillDisk writes path in 1 MiB chunks, as fast as tmpfs takes them (over
// 1 GB/s), until the file system is full and returns how much it wrote.
func fillDisk(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The attack: another writer fills the disk while the gateway ingests and
// signs 1 kB readings at full speed (before, Badger died of SIGBUS in its
// mmap'd value log write; without the flush reserve, in Close's memtable
// flush). Now the store refuses with ErrDiskFull (Append
// and CommitSigned alike), nothing acknowledged is lost, and it works again
// once the space is freed. Repeated a few times, since the filler races the
// value log and memtable rotations.
func TestDiskFilledByAnotherWriter(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) { diskFilledRound(t) })
	}
}

func diskFilledRound(t *testing.T) {
	mnt := mountTmpfs(t, "160m")
	opts := Options{Dir: filepath.Join(mnt, "db")} // default MinFreeBytes
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()

	var acked, refused atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	payload := `{"fill":"` + strings.Repeat("x", 1200) + `"}`
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.Append(ctx, reading(testPart, "c", payload), true)
				switch {
				case err == nil:
					acked.Add(1)
				case errors.Is(err, ErrDiskFull):
					refused.Add(1)
					time.Sleep(time.Millisecond)
				default:
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	var signed atomic.Int64
	wg.Go(func() { signed.Add(signUntil(t, s, stop)) })

	time.Sleep(300 * time.Millisecond) // ingestion under way
	filler := filepath.Join(mnt, "filler")
	filled := fillDisk(t, filler)
	time.Sleep(500 * time.Millisecond) // ingestion against a full disk
	close(stop)
	wg.Wait()
	t.Logf("filler wrote %d MiB; %d readings acknowledged, %d refused (ErrDiskFull), %d signed", filled>>20, acked.Load(), refused.Load(), signed.Load())
	if refused.Load() == 0 {
		t.Error("no append was refused on the full disk")
	}
	cancel()
	if err := errors.Join(<-ran, s.Close()); err != nil {
		t.Fatal(err)
	}

	// Still full: Open refuses instead of faulting at start-up.
	if _, err := Open(opts); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("open on the full disk: %v, want ErrDiskFull", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s = running(t, opts)
	pend, err := s.Pending(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if got := int64(len(pend)) + int64(s.signedCount(t)); got != acked.Load() {
		t.Fatalf("%d pending + signed after reopening, %d acknowledged", got, acked.Load())
	}
	if err := s.Append(context.Background(), reading(testPart, "c", "{}"), true); err != nil {
		t.Fatalf("append after freeing space: %v", err)
	}
}

// signUntil signs pending readings as the bridge's signer does until stop,
// tolerating ErrDiskFull, and returns how many it committed.
func signUntil(t *testing.T, s *Store, stop <-chan struct{}) int64 {
	var after uint64
	var n int64
	for ts := int64(1); ; {
		select {
		case <-stop:
			return n
		default:
		}
		pend, err := s.Pending(after, 64)
		if err != nil {
			t.Errorf("pending: %v", err)
			return n
		}
		if len(pend) == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		batch := make([]Signed, len(pend))
		for i, r := range pend {
			batch[i] = signedFor(t, r, ts, 0, nil)
			ts++
		}
		err = s.CommitSigned(context.Background(), batch, nil)
		switch {
		case errors.Is(err, ErrDiskFull):
			time.Sleep(time.Millisecond)
		case err != nil:
			t.Errorf("commit signed: %v", err)
			return n
		default:
			after = pend[len(pend)-1].Seq
			n += int64(len(pend))
		}
	}
}

// signedCount counts the stored signed messages of testPart.
func (s *Store) signedCount(t *testing.T) int {
	t.Helper()
	n := 0
	if err := s.Messages(testPart, 0, 1<<62, func([]byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// CheckFree refuses a nearly full file system and looks through a
// directory that does not exist yet.
func TestCheckFree(t *testing.T) {
	mnt := mountTmpfs(t, "8m")
	dir := filepath.Join(mnt, "state", "data")
	if err := CheckFree(dir, 4<<20); err != nil {
		t.Errorf("8 MiB free, 4 needed: %v", err)
	}
	err := CheckFree(dir, 16<<20)
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), dir) {
		t.Errorf("8 MiB free, 16 needed: %v, want ErrDiskFull naming %s", err, dir)
	}
	if err := CheckFree(dir, -1); err != nil {
		t.Errorf("check disabled: %v", err)
	}
}
