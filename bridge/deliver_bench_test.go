package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// BenchmarkDeliverInOrder is the receiving gateway's path from the
// overlay to local MQTT for a message that arrives in order: the
// Orderer, the Deliverer and the mark the broker stores with the copy.
// Its allocations per message are what B's garbage collector pays for
// each reading (-benchmem).
func BenchmarkDeliverInOrder(b *testing.B) {
	now := time.Now().UnixMilli()
	msgs := chainMessagesAt(b.N+1, func(i int) int64 { return now + int64(i) })
	o := NewOrderer(OrderConfig{Name: "mqtt", Positions: &memPositions{states: map[string]streamr.ChainState{}}})
	d := NewDeliverer([]byte("self"), nopBroker{}, o, nil, slog.New(slog.DiscardHandler))
	sub, err := CompileSubscription(SubscribeConfig{Stream: string(msgs[0].ID.StreamID), Topic: "{stream}"}, 0)
	if err != nil {
		b.Fatal(err)
	}
	receive := d.handler(sub)
	receive(msgs[0], nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		receive(msgs[i+1], nil)
	}
	b.StopTimer()
	if n := int(testutil.ToFloat64(o.metrics.delivered)); n != b.N+1 {
		b.Fatalf("delivered %d of %d", n, b.N+1)
	}
}

// A mark reads back as the MessageRef it was made of, in encoding/json's
// form, which marks stored by earlier versions have.
func TestAppendMark(t *testing.T) {
	for _, ref := range []streamr.MessageRef{{}, {Timestamp: 1700000000123, SequenceNumber: 7}, {Timestamp: -1, SequenceNumber: math.MaxInt32}, {Timestamp: math.MinInt64, SequenceNumber: math.MinInt32}} {
		got := appendMark(nil, ref)
		want, err := json.Marshal(ref)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("mark of %+v: %s, want %s", ref, got, want)
		}
		var back streamr.MessageRef
		if err := json.Unmarshal(got, &back); err != nil || back != ref {
			t.Fatalf("mark %s read back as %+v (%v), want %+v", got, back, err, ref)
		}
	}
}

// BenchmarkStoreInOrder is the storing side of a receiving gateway for a
// message that arrives in order: the Storer's Orderer and its buffer for
// the next batch (-benchmem).
func BenchmarkStoreInOrder(b *testing.B) {
	now := time.Now().UnixMilli()
	msgs := chainMessagesAt(b.N, func(i int) int64 { return now + int64(i) })
	s := NewStorer(emptyLog{}, OrderConfig{}, slog.New(slog.DiscardHandler))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s.receive(msgs[i], nil)
	}
	b.StopTimer()
	if len(s.buf) != b.N {
		b.Fatalf("kept %d of %d", len(s.buf), b.N)
	}
}

// emptyLog is a ReceivedLog that holds nothing and stores nothing.
type emptyLog struct{}

func (emptyLog) StoreReceived(context.Context, []streamr.Envelope, map[string]streamr.ChainState) (int, error) {
	return 0, nil
}
func (emptyLog) ChainState(string) (streamr.ChainState, bool, error) {
	return streamr.ChainState{}, false, nil
}
