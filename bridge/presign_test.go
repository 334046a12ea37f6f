package bridge

import (
	"fmt"
	"sync"
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
