package storage

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

var benchPart = streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/in"}

// receivedBatch returns n encoded messages that continue chain, as an
// overlay delivers them, with content as each one's payload.
func receivedBatch(b *testing.B, chain *streamr.Chain, n int, ts func(j int) int64, content []byte) []streamr.Envelope {
	msgs := make([]streamr.Envelope, n)
	for j := range msgs {
		ref, prev := chain.Next(ts(j))
		m := &streamr.StreamMessage{
			ID: streamr.MessageID{StreamID: benchPart.Stream, Timestamp: ref.Timestamp, SequenceNumber: ref.SequenceNumber,
				PublisherID: make([]byte, 20), MsgChainID: chain.ID()},
			PrevMsgRef: prev,
			Body:       &streamr.ContentMessage{Content: content},
		}
		enc, err := m.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		msgs[j] = streamr.Envelope{Msg: m, Encoded: enc}
	}
	return msgs
}

// BenchmarkStoreReceived stores batches of overlay messages as a
// receiving gateway's Storer does (64 new messages of one chain and its
// position per synced commit); -benchmem's allocations are per batch.
func BenchmarkStoreReceived(b *testing.B) {
	s := running(b, Options{MinFreeBytes: -1})
	const batch = 64
	content := make([]byte, 200)
	_, _ = rand.Read(content)
	chain := streamr.NewChain("c")
	b.SetBytes(batch * 300)
	b.ReportAllocs()
	for i := range b.N {
		b.StopTimer()
		msgs := receivedBatch(b, chain, batch, func(j int) int64 { return int64(i*batch + j) }, content)
		last := msgs[batch-1].Msg.ID.Ref()
		states := map[string]streamr.ChainState{"delivered/store\x00c": {ID: "c", Last: &last}}
		b.StartTimer()
		if n, err := s.StoreReceived(context.Background(), msgs, states); err != nil || n != batch {
			b.Fatalf("stored %d of %d: %v", n, batch, err)
		}
	}
}

// BenchmarkOwnAfterReceived is the forwarder's scan over a log of
// received messages (a receiving gateway's, every Retry): 640 entries
// whose bytes it does not take.
func BenchmarkOwnAfterReceived(b *testing.B) {
	s := running(b, Options{MinFreeBytes: -1})
	chain := streamr.NewChain("c")
	for range 10 {
		msgs := receivedBatch(b, chain, 64, func(int) int64 { return time.Now().UnixMilli() }, make([]byte, 200))
		if _, err := s.StoreReceived(context.Background(), msgs, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		es, err := s.OwnAfter(0, 1000)
		if err != nil || len(es) != 640 || es[0].Encoded != nil {
			b.Fatalf("%d entries, %v", len(es), err)
		}
	}
}
