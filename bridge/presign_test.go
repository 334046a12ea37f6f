package bridge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// TestFastSignerSignsInCommit checks that with a fast signer every reading
// is already signed and stored when its PUBACK arrives (signed in the group
// commit, never stored pending), in contiguous chains, one per client.
func TestFastSignerSignsInCommit(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, gatewayOptions{signer: key})
	g.pipeline.signer.maxPresign.Store(int64(time.Second)) // the race detector slows signing
	for g.pipeline.signer.calibrated.Load() == 0 {
		time.Sleep(time.Millisecond) // Run calibrates first
	}
	const clients, n = 3, 40
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range n {
				if err := g.publish(t.Context(), fmt.Sprintf("sensor-%d", c), "fast/data", fmt.Sprintf(`{"c":%d,"i":%d}`, c, i)); err != nil {
					t.Errorf("client %d: %v", c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	pending, err := g.store.Pending(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	part := streamr.StreamPartID{Stream: streamr.StreamID(streamr.UserID(key.PublisherID()) + "/fast/data")}
	msgs := g.messages(t, part)
	if len(pending) != 0 || len(msgs) != clients*n {
		t.Fatalf("after the last PUBACK: %d readings pending, %d of %d signed", len(pending), len(msgs), clients*n)
	}
	last := map[string]streamr.MessageRef{}
	for _, m := range msgs {
		if err := streamr.Validate(m, 0, streamr.Limits{}); err != nil {
			t.Fatal(err)
		}
		prev, seen := last[m.ID.MsgChainID]
		if seen && (m.PrevMsgRef == nil || *m.PrevMsgRef != prev) {
			t.Fatalf("chain %s: message %s has prev %v, want %s", m.ID.MsgChainID, m.ID.Ref(), m.PrevMsgRef, prev)
		}
		last[m.ID.MsgChainID] = m.ID.Ref()
	}
	if len(last) != clients {
		t.Fatalf("%d chains, want one per client (%d)", len(last), clients)
	}
}

// slowStartSigner is slow for its first signatures only, like a key
// calibrated while the CPU was busy at start.
type slowStartSigner struct {
	*streamr.EVMKey
	slow atomic.Int64 // signatures left that take 20 ms
}

func (s *slowStartSigner) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	if s.slow.Add(-1) >= 0 {
		time.Sleep(20 * time.Millisecond)
	}
	return s.EVMKey.Sign(ctx, payload)
}

// TestSlowStartSignerSignsInCommitLater checks that a fast key calibrated
// as slow (its start-up signatures were delayed) signs in the commit once
// one of its signatures shows its speed: readings are then signed when
// their PUBACK arrives, not stored pending for the background signer.
func TestSlowStartSignerSignsInCommitLater(t *testing.T) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	signer := &slowStartSigner{EVMKey: key}
	signer.slow.Store(1) // calibration stops at one signature over the limit
	g := startTestGateway(t, gatewayOptions{signer: signer})
	limit := time.Duration(g.pipeline.signer.maxPresign.Load())
	if raceEnabled { // the race detector slows signing
		limit = 10 * time.Millisecond
		g.pipeline.signer.maxPresign.Store(int64(limit))
	}
	for g.pipeline.signer.calibrated.Load() == 0 {
		time.Sleep(time.Millisecond) // Run calibrates first
	}
	if cal := time.Duration(g.pipeline.signer.calibrated.Load()); cal <= limit {
		t.Fatalf("calibrated at %s, want slower than the %s limit", cal, limit)
	}
	part := streamr.StreamPartID{Stream: streamr.StreamID(streamr.UserID(key.PublisherID()) + "/later/data")}
	// The first reading is signed behind, by the background signer, which
	// sees that the key is fast.
	if err := g.publish(t.Context(), "sensor-1", "later/data", `{"i":0}`); err != nil {
		t.Fatal(err)
	}
	g.waitSigned(t, part, 1)
	if cal := time.Duration(g.pipeline.signer.calibrated.Load()); cal > limit {
		t.Fatalf("after a fast signature the speed is still %s, over the %s limit", cal, limit)
	}
	const n = 20
	for i := 1; i <= n; i++ {
		if err := g.publish(t.Context(), "sensor-1", "later/data", fmt.Sprintf(`{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	pending, err := g.store.Pending(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := g.messages(t, part); len(pending) != 0 || len(msgs) != n+1 {
		t.Fatalf("after the last PUBACK: %d readings pending, %d of %d signed", len(pending), len(msgs), n+1)
	}
}
