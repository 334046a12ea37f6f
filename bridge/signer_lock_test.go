package bridge

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// gateSigner holds a signature, once armed, until the test releases it:
// a batch being signed under the signer's lock for as long as the test
// needs.
type gateSigner struct {
	*streamr.EVMKey
	armed   chan struct{} // closed: the next signature stops at the gate
	entered chan struct{} // closed by the signature that stopped
	release chan struct{}
}

func newGateSigner(t *testing.T) *gateSigner {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	return &gateSigner{EVMKey: key, armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateSigner) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	select {
	case <-g.armed:
		select {
		case <-g.entered:
		default:
			close(g.entered)
			<-g.release
		}
	default:
	}
	return g.EVMKey.Sign(ctx, payload)
}

// gateLog is a Log whose Pending, once armed, waits for the test; it
// stores nothing else.
type gateLog struct {
	armed   chan struct{}
	entered chan struct{}
	release chan struct{}
}

func newGateLog() *gateLog {
	return &gateLog{armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
}

func (l *gateLog) Enqueue(*storage.Reading, bool) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}

func (l *gateLog) Pending(uint64, int) ([]storage.Reading, error) {
	select {
	case <-l.armed:
		close(l.entered)
		<-l.release
	default:
	}
	return nil, nil
}

func (l *gateLog) CommitSigned(context.Context, []storage.Signed, map[string]streamr.ChainState) error {
	return nil
}

func (l *gateLog) ChainState(string) (streamr.ChainState, bool, error) {
	return streamr.ChainState{}, false, nil
}

func lockTestPipeline(t *testing.T, signer streamr.Signer, log Log) *Pipeline {
	t.Helper()
	rule, err := Compile(RuleConfig{Topic: "#", Stream: "{address}/{topic}"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Rules: []*Rule{rule}, Signer: signer, Log: log, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.signer.calibrated.Store(1) // presign whatever the machine's speed
	p.signer.maxPresign.Store(int64(time.Hour))
	return p
}

func lockTestReadings(seq uint64) []storage.Reading {
	part := streamr.StreamPartID{Stream: "0x0000000000000000000000000000000000000001/lock"}
	return []storage.Reading{{Seq: seq, Part: part, Source: "sensor-1", ReceivedAt: 1_700_000_000_000 + int64(seq), Payload: []byte(`{"v":1}`)}}
}

// liveness bounds how long a test waits for a call that must not block: it
// is not a performance figure, only a limit on a hang.
const liveness = 30 * time.Second

// TestCommittedWhileNextBatchSigns checks that the group commit can report
// a landed presigned batch (and so acknowledge its readings) while the
// next batch is being signed: the commit in flight must not wait for the
// signatures of the batch after it (the PUBACK tail of issue 11).
func TestCommittedWhileNextBatchSigns(t *testing.T) {
	gs := newGateSigner(t)
	p := lockTestPipeline(t, gs, newGateLog())
	s := p.signer
	first, _, err := s.Presign(t.Context(), lockTestReadings(1))
	if err != nil || first == nil {
		t.Fatalf("presign the first batch: %v, %v", first, err)
	}
	close(gs.armed)
	signed := make(chan error, 1)
	go func() {
		_, _, err := s.Presign(context.Background(), lockTestReadings(2))
		signed <- err
	}()
	<-gs.entered // the second batch is being signed, holding the signer's lock
	committed := make(chan struct{})
	go func() {
		s.Committed(first, nil)
		close(committed)
	}()
	select {
	case <-committed:
	case <-time.After(liveness):
		t.Error("Committed of the first batch waited for the second batch's signatures")
	}
	close(gs.release)
	<-committed
	if err := <-signed; err != nil {
		t.Fatal(err)
	}
}

// TestPresignWhileSignerLooksForPending checks that the background
// signer's look for pending readings (a Badger read on every wake-up,
// which finds nothing while readings are signed in the commit) does not
// hold up the group commit's Presign.
func TestPresignWhileSignerLooksForPending(t *testing.T) {
	log := newGateLog()
	p := lockTestPipeline(t, newGateSigner(t), log)
	s := p.signer
	close(log.armed)
	looked := make(chan error, 1)
	go func() {
		_, err := s.signBatch(context.Background())
		looked <- err
	}()
	<-log.entered // signBatch is in Pending
	presigned := make(chan error, 1)
	go func() {
		_, _, err := s.Presign(context.Background(), lockTestReadings(1))
		presigned <- err
	}()
	select {
	case err := <-presigned:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(liveness):
		t.Error("Presign waited for the background signer's look for pending readings")
	}
	close(log.release)
	if err := <-looked; err != nil {
		t.Fatal(err)
	}
}

// countingClock counts Synced calls (each a system call on KernelClock).
type countingClock struct {
	KernelClock
	synced atomic.Int64
}

func (c *countingClock) Synced() bool { c.synced.Add(1); return true }

// TestIngestAsksClockOnlyWhenHolding checks that without the hold policy
// a reading's ingest does not ask the kernel whether the clock is
// synchronised (an adjtimex call on the MQTT read path per reading).
func TestIngestAsksClockOnlyWhenHolding(t *testing.T) {
	for _, hold := range []bool{false, true} {
		clock := &countingClock{}
		rule, err := Compile(RuleConfig{Topic: "#", Stream: "{address}/{topic}"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(Config{Rules: []*Rule{rule}, Signer: newGateSigner(t), Log: newGateLog(), Clock: clock,
			HoldUnsynced: hold, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if _, reason := p.Ingest(Publish{ClientID: "sensor-1", Topic: "clock/data", Payload: []byte(`{"v":1}`), QoS: 1}); reason != nil {
			t.Fatal(reason)
		}
		if got := clock.synced.Load() > 0; got != hold {
			t.Errorf("hold policy %v: clock asked %d times on ingest", hold, clock.synced.Load())
		}
	}
}
