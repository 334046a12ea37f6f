package jsnet

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// SignedChain returns one chain of JSON messages of a stream partition
// ("streamId#partition"), signed with key and encoded.
func SignedChain(t testing.TB, key streamr.Signer, streamPart string, contents []string) [][]byte {
	t.Helper()
	sp, err := streamr.ParseStreamPartID(streamPart)
	if err != nil {
		t.Fatal(err)
	}
	chain := streamr.NewChain(streamr.NewChainID())
	ts := time.Now().UnixMilli()
	out := make([][]byte, 0, len(contents))
	for i, content := range contents {
		ref, prev := chain.Next(ts + int64(i))
		m := &streamr.StreamMessage{
			ID: streamr.MessageID{StreamID: sp.Stream, StreamPartition: int32(sp.Partition),
				Timestamp: ref.Timestamp, SequenceNumber: ref.SequenceNumber, MsgChainID: chain.ID()},
			PrevMsgRef: prev,
			Body:       &streamr.ContentMessage{Content: []byte(content), ContentType: streamr.ContentJSON},
		}
		if err := streamr.SignMessage(context.Background(), key, m); err != nil {
			t.Fatal(err)
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}
