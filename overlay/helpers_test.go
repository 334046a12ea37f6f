package overlay

import (
	"context"
	"encoding/json"
	"flag"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/streamr"
)

var long = flag.Bool("long", false, "run the full scale (500 nodes) and churn (per-minute) tests")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// mocknet (scale tests only) races when a connection closes while
		// a stream on it is being opened: the new stream misses the
		// teardown and its pipe goroutines, and the pubsub reader/writer
		// on it, block forever. Real transports reset such streams.
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).transport"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).Write"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).Read"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).transport.func1"),
	)
}

// publisher is a Streamr identity owning the stream "0x<address>/sensors".
type publisher struct {
	key    *streamr.EVMKey
	stream streamr.StreamID
	chain  string
}

func newPublisher(t testing.TB) *publisher {
	t.Helper()
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	addr := k.Address()
	return &publisher{key: k, stream: streamr.StreamID(streamr.UserID(addr[:]) + "/sensors"), chain: streamr.NewChainID()}
}

func (p *publisher) part(t testing.TB, partition int) streamr.StreamPartID {
	t.Helper()
	sp, err := streamr.NewStreamPartID(p.stream, partition)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// message returns a message of part signed by signer (which need not be
// the stream owner), with JSON content carrying seq and the send time.
func message(t testing.TB, signer streamr.Signer, part streamr.StreamPartID, chain string, ts int64, seq int32) *streamr.StreamMessage {
	t.Helper()
	content, err := json.Marshal(map[string]any{"seq": seq, "sent": time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	m := &streamr.StreamMessage{
		ID: streamr.MessageID{
			StreamID: part.Stream, StreamPartition: int32(part.Partition),
			Timestamp: ts, SequenceNumber: seq, MsgChainID: chain,
		},
		Body: &streamr.ContentMessage{Content: content, ContentType: streamr.ContentJSON},
	}
	if err := streamr.SignMessage(context.Background(), signer, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func encode(t testing.TB, m *streamr.StreamMessage) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bundleOf returns the gossip data of a bundle of encoded messages, as a
// peer (honest or not) sends it.
func bundleOf(t testing.TB, msgs ...[]byte) []byte {
	t.Helper()
	b, err := encodeBundle(msgs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signed returns the encoded n-th message of p's chain on part.
func (p *publisher) signed(t testing.TB, part streamr.StreamPartID, ts int64, seq int32) []byte {
	t.Helper()
	return encode(t, message(t, p.key, part, p.chain, ts, seq))
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collector gathers deliveries for assertions.
type collector struct {
	mu  sync.Mutex
	got []Delivery
}

func (c *collector) deliver(d Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, d)
}

func (c *collector) deliveries() []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Delivery(nil), c.got...)
}
