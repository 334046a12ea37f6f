//go:build linux

package streamr

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
	"golang.org/x/sys/unix"
)

// BenchmarkSignEncodeEVMVsBare reports sign+encode throughput as a fraction
// of bare crypto.Sign throughput. It alternates batches of both on one
// locked OS thread and measures that thread's CPU time, so time the thread
// spends descheduled on a busy shared machine counts for neither side.
func BenchmarkSignEncodeEVMVsBare(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const batch = 32
	ctx := context.Background()
	k := keyOne(b)
	digest := EVMHash(benchContent)
	var bare, full time.Duration
	seq := 0
	for b.Loop() {
		t0 := threadCPUTime(b)
		for range batch {
			if _, err := crypto.Sign(digest, k.PrivateKey()); err != nil {
				b.Fatal(err)
			}
		}
		t1 := threadCPUTime(b)
		for range batch {
			m := benchMessage(b, seq)
			seq++
			if err := SignMessage(ctx, k, m); err != nil {
				b.Fatal(err)
			}
			if _, err := m.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
		t2 := threadCPUTime(b)
		bare += t1 - t0
		full += t2 - t1
	}
	b.ReportMetric(float64(bare.Nanoseconds())/float64(seq), "bare-cpu-ns/sign")
	b.ReportMetric(float64(full.Nanoseconds())/float64(seq), "full-cpu-ns/msg")
	b.ReportMetric(float64(bare)/float64(full), "throughput-ratio")
}

func threadCPUTime(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatalf("thread CPU clock: %v", err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkUnmarshalVsProto reports Unmarshal's CPU time per message as a
// fraction of the proto.Unmarshal decoder's (referenceUnmarshal), in
// alternating batches on one locked OS thread, as above. The garbage
// collector's background work runs on other threads: allocations count
// here only through the allocator's own cost (see -benchmem for them).
func BenchmarkUnmarshalVsProto(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const batch = 256
	enc := signedBenchMessage(b)
	var ours, ref time.Duration
	n := 0
	for b.Loop() {
		t0 := threadCPUTime(b)
		for range batch {
			if _, err := Unmarshal(enc); err != nil {
				b.Fatal(err)
			}
		}
		t1 := threadCPUTime(b)
		for range batch {
			if _, err := referenceUnmarshal(enc); err != nil {
				b.Fatal(err)
			}
		}
		t2 := threadCPUTime(b)
		ours += t1 - t0
		ref += t2 - t1
		n += batch
	}
	b.ReportMetric(float64(ours.Nanoseconds())/float64(n), "protowire-cpu-ns/msg")
	b.ReportMetric(float64(ref.Nanoseconds())/float64(n), "proto-cpu-ns/msg")
	b.ReportMetric(float64(ours)/float64(ref), "cpu-ratio")
}
