//go:build linux

package e2ee

import (
	"context"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tributary-iot/tributary/streamr"
)

// benchReading is a ~200-byte JSON reading, as in streamr's benchmarks.
var benchReading = []byte(`{"deviceId":"greenhouse-3/sensor-17","temperature":21.53,"humidity":48.2,"co2":612,"battery":3.71,"rssi":-67,"firmware":"1.4.2","ts":1704972511765,"status":"ok","location":{"lat":60.1699,"lon":24.9384}}`)

// ratioBench alternates batches of plain and encrypted work on one locked
// OS thread and compares the thread's CPU time (time descheduled on a busy
// machine counts for neither), reporting both costs and plain/encrypted
// throughput. Which side goes first alternates too, so that neither gains
// from running second (warm caches).
func ratioBench(b *testing.B, plain, encrypted func(seq int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const batch = 32
	var tPlain, tEnc time.Duration
	seq := 0
	run := func(f func(int)) time.Duration {
		t0 := threadCPU(b)
		for i := range batch {
			f(seq + i)
		}
		return threadCPU(b) - t0
	}
	for round := 0; b.Loop(); round++ {
		if round%2 == 0 {
			tPlain += run(plain)
			tEnc += run(encrypted)
		} else {
			tEnc += run(encrypted)
			tPlain += run(plain)
		}
		seq += batch
	}
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(seq), "plain-cpu-ns/msg")
	b.ReportMetric(float64(tEnc.Nanoseconds())/float64(seq), "encrypted-cpu-ns/msg")
	b.ReportMetric(float64(tPlain)/float64(tEnc), "throughput-ratio")
}

func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatalf("thread CPU clock: %v", err)
	}
	return time.Duration(ts.Nano())
}

func benchExchange(b *testing.B) (*Exchange, *streamr.EVMKey, streamr.StreamPartID) {
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		b.Fatal(err)
	}
	x, err := New(Config{Signer: k, Secrets: &memSecrets{m: map[string][]byte{}}})
	if err != nil {
		b.Fatal(err)
	}
	addr := k.Address()
	sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(addr[:])+"/greenhouse/sensors"), 17)
	return x, k, sp
}

func benchMsg(sp streamr.StreamPartID, seq int) *streamr.StreamMessage {
	return &streamr.StreamMessage{
		ID: streamr.MessageID{StreamID: sp.Stream, StreamPartition: int32(sp.Partition), Timestamp: 1_704_972_511_765,
			SequenceNumber: int32(seq), MsgChainID: "401zi3b84sd64qn31fte"},
		PrevMsgRef: &streamr.MessageRef{Timestamp: 1_704_972_511_764},
		Body:       &streamr.ContentMessage{Content: benchReading},
	}
}

// BenchmarkEncryptSignVsSign: the publisher's per-reading cost with
// encryption (AES-256-CTR with a fresh IV, then sign and encode) against
// sign and encode alone.
func BenchmarkEncryptSignVsSign(b *testing.B) {
	x, k, sp := benchExchange(b)
	ctx := context.Background()
	now := time.Now()
	signEncode := func(m *streamr.StreamMessage) {
		if err := streamr.SignMessage(ctx, k, m); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
	ratioBench(b, func(seq int) { signEncode(benchMsg(sp, seq)) }, func(seq int) {
		m := benchMsg(sp, seq)
		if _, err := x.Encrypt(ctx, sp, m.Content(), now); err != nil {
			b.Fatal(err)
		}
		signEncode(m)
	})
}

// BenchmarkVerifyDecryptVsVerify: the subscriber's per-message cost with a
// known group key (decode, verify, decrypt) against decode and verify.
func BenchmarkVerifyDecryptVsVerify(b *testing.B) {
	x, k, sp := benchExchange(b)
	ctx := context.Background()
	encode := func(m *streamr.StreamMessage) []byte {
		if err := streamr.SignMessage(ctx, k, m); err != nil {
			b.Fatal(err)
		}
		enc, err := m.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		return enc
	}
	plainEnc := encode(benchMsg(sp, 0))
	em := benchMsg(sp, 0)
	if _, err := x.Encrypt(ctx, sp, em.Content(), time.Now()); err != nil {
		b.Fatal(err)
	}
	encEnc := encode(em)
	decodeVerify := func(enc []byte) *streamr.StreamMessage {
		m, err := streamr.Unmarshal(enc)
		if err != nil {
			b.Fatal(err)
		}
		if err := streamr.VerifySignature(m); err != nil {
			b.Fatal(err)
		}
		return m
	}
	ratioBench(b, func(int) { decodeVerify(plainEnc) }, func(int) {
		if _, ok, err := x.Decrypt(ctx, decodeVerify(encEnc)); !ok || err != nil {
			b.Fatal("not decrypted", err)
		}
	})
}
