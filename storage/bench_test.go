package storage

import (
	"context"
	"crypto/rand"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// BenchmarkAppendDurable measures group-committed durable appends of
// 200-byte readings from parallel writers (GOMAXPROCS × -cpu × 16 goroutines).
func BenchmarkAppendDurable(b *testing.B) {
	s := running(b, Options{MinFreeBytes: -1})
	payload := make([]byte, 200)
	_, _ = rand.Read(payload)
	b.SetParallelism(16)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Append(context.Background(), reading(testPart, "c", string(payload)), true); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/counterValue(b, s.m.commits), "readings/commit")
}

// BenchmarkAppendSync1 is the naive baseline: one synced Badger txn per
// reading, serial, on the store's own database and encoding.
func BenchmarkAppendSync1(b *testing.B) {
	s := running(b, Options{MinFreeBytes: -1})
	payload := make([]byte, 200)
	_, _ = rand.Read(payload)
	r := reading(testPart, "c", string(payload))
	part, err := s.partNumber(r.Part)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := range b.N {
		err := s.db.Update(func(txn *badger.Txn) error {
			return txn.Set(readingKey(uint64(1e12+i)), encodeReading(r, part))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitSigned measures signing commits of 256 messages (about
// 370 bytes each) replacing their readings.
func BenchmarkCommitSigned(b *testing.B) {
	s := running(b, Options{MinFreeBytes: -1})
	payload := make([]byte, 200)
	const batch = 256
	b.SetBytes(batch * 373)
	for range b.N {
		b.StopTimer()
		msgs := make([]Signed, batch)
		for i := range msgs {
			_, _ = rand.Read(payload)
			r := reading(testPart, "c", string(payload))
			if err := s.Append(context.Background(), r, i == batch-1); err != nil {
				b.Fatal(err)
			}
			msgs[i] = signedFor(b, *r, r.ReceivedAt+int64(r.Seq), 0, nil)
		}
		b.StartTimer()
		if err := s.CommitSigned(context.Background(), msgs, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
}
