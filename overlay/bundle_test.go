package overlay

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

func TestPackBundles(t *testing.T) {
	small := bytes.Repeat([]byte("s"), 400)
	big := bytes.Repeat([]byte("b"), bundleBytes+1)
	repeat := func(b []byte, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = b
		}
		return out
	}
	tests := []struct {
		name        string
		msgs        [][]byte
		maxMessages int
		want        [][2]int
	}{
		{"none", nil, 256, nil},
		{"one", repeat(small, 1), 256, [][2]int{{0, 1}}},
		{"by count", repeat(small, 5), 2, [][2]int{{0, 2}, {2, 4}, {4, 5}}},
		{"by bytes", repeat(small, 100), 256, [][2]int{{0, 81}, {81, 100}}}, // 81 × 400 B ≤ 32 KiB < 82 × 400 B
		{"a large message goes alone", [][]byte{small, big, small}, 256, [][2]int{{0, 1}, {1, 2}, {2, 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := packBundles(tc.msgs, tc.maxMessages); !slices.Equal(got, tc.want) {
				t.Errorf("packBundles = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDecodeBundle(t *testing.T) {
	tooMany := make([][]byte, maxBundleMessages+1)
	for i := range tooMany {
		tooMany[i] = []byte{byte(i)}
	}
	tests := []struct {
		name string
		data []byte
		want [][]byte // nil: refused
	}{
		{"one message", bundleOf(t, []byte("a")), [][]byte{[]byte("a")}},
		{"two messages", bundleOf(t, []byte("a"), []byte("bc")), [][]byte{[]byte("a"), []byte("bc")}},
		{"an unknown field skipped", append(bundleOf(t, []byte("a")), 0x10, 0x01), [][]byte{[]byte("a")}},
		{"the most messages", bundleOf(t, tooMany[:maxBundleMessages]...), tooMany[:maxBundleMessages]},
		{"empty", nil, nil},
		{"too many messages", bundleOf(t, tooMany...), nil},
		{"not protobuf", []byte("hello"), nil},
		{"truncated", bundleOf(t, []byte("abc"))[:3], nil},
		{"messages field not length-delimited", []byte{0x08, 0x01}, nil},
		{"field number above 2^29-1", append(bundleOf(t, []byte("a")), 0x80, 0xff, 0xff, 0xff, 0x11, 0x00), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeBundle(tc.data)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("decodeBundle accepted %q as %q", tc.data, got)
				}
				return
			}
			if err != nil || !slices.EqualFunc(got, tc.want, bytes.Equal) {
				t.Fatalf("decodeBundle = %q, %v; want %q", got, err, tc.want)
			}
			if len(got) > 1 && &got[0][0] == &tc.data[2] {
				t.Error("a decoded message shares the bundle's buffer: keeping it would pin the whole bundle")
			}
		})
	}
}

func TestRecentIDsGenerations(t *testing.T) {
	r := newRecentIDs(2)
	id := func(seq int32) uint64 {
		return r.key(&streamr.MessageID{StreamID: "s", PublisherID: []byte{1}, MsgChainID: "c", Timestamp: 7, SequenceNumber: seq})
	}
	for seq := range int32(3) {
		r.add(id(seq))
	}
	// Generations of 2: {0, 1} became the previous one when 2 came.
	for seq, want := range []bool{true, true, true, false} {
		if got := r.seen(id(int32(seq))); got != want {
			t.Errorf("seen(seq %d) = %v, want %v", seq, got, want)
		}
	}
	r.add(id(3))
	r.add(id(4)) // {2, 3} previous, {4} current: 0 and 1 forgotten
	if r.seen(id(0)) || !r.seen(id(2)) || !r.seen(id(4)) {
		t.Errorf("after two generations: seen 0 %v, 2 %v, 4 %v; want false, true, true", r.seen(id(0)), r.seen(id(2)), r.seen(id(4)))
	}
}

// bundlePair is node A, relaying only, meshed with node B, which collects
// what it delivers, in one partition.
type bundlePair struct {
	a, b   *Node
	pa, pb *Partition
	atB    collector
}

// newBundlePair returns n messages of one chain, signed for the pair's
// partition, and the pair.
func newBundlePair(t *testing.T, n int) ([][]byte, *bundlePair) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = pub.signed(t, part, 1_700_000_000_000+int64(i), 0)
	}
	p := &bundlePair{a: startNode(t, loopbackConfig("tcp", nil))}
	p.b = startNode(t, loopbackConfig("tcp", p.a.Addrs()))
	p.pa = join(t, p.a, part, nil)
	p.pb = join(t, p.b, part, p.atB.deliver)
	waitFor(t, 20*time.Second, "A to mesh with B", func() bool { return p.pa.Neighbours() == 1 })
	return msgs, p
}

// TestPublishBatchSendsBundles publishes a batch of readings and counts
// the gossip messages a plain GossipSub peer of the topic receives: a
// few bundles, holding every message in order, which B delivers one by
// one.
func TestPublishBatchSendsBundles(t *testing.T) {
	const n = 1000
	msgs, p := newBundlePair(t, n)
	a, pa, atB := p.a, p.pa, &p.atB
	watcher := newRogue(t, "tcp", a, pa)
	waitFor(t, 20*time.Second, "A to mesh with B and the watcher", func() bool { return pa.Neighbours() == 2 })

	if sent, err := pa.PublishBatch(t.Context(), msgs); err != nil || sent != n {
		t.Fatalf("PublishBatch = %d, %v", sent, err)
	}
	// pubsub sends a batch's gossip messages in the order of their IDs:
	// each bundle must be a run of the batch, in order, and together they
	// must hold it once.
	index := func(m []byte) int { return slices.IndexFunc(msgs, func(x []byte) bool { return bytes.Equal(x, m) }) }
	covered := make([]bool, n)
	got, gossip := 0, 0
	for got < n {
		m, err := watcher.sub.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		gossip++
		inner, err := decodeBundle(m.Data)
		if err != nil {
			t.Fatalf("gossip message %d: %v", gossip, err)
		}
		first := index(inner[0])
		for j, enc := range inner {
			if i := first + j; first < 0 || i >= n || covered[i] || !bytes.Equal(enc, msgs[i]) {
				t.Fatalf("gossip message %d: message %d of %d is not the batch's next one", gossip, j, len(inner))
			}
			covered[first+j] = true
		}
		got += len(inner)
	}
	if want := n * len(msgs[0]) / bundleBytes; gossip > want+1 {
		t.Errorf("%d gossip messages carried %d readings, want at most %d", gossip, n, want+1)
	}
	// Bundles are validated in parallel, so they may reach B's subscriber
	// out of order (the bridge's ordering sorts them); each one's messages
	// come in order.
	waitFor(t, 10*time.Second, "B to deliver every message", func() bool { return len(atB.deliveries()) == n })
	delivered := atB.deliveries()
	slices.SortStableFunc(delivered, func(x, y Delivery) int { return int(x.Msg.ID.Timestamp - y.Msg.ID.Timestamp) })
	for i, d := range delivered {
		if !bytes.Equal(d.Encoded, msgs[i]) {
			t.Fatalf("B did not deliver the batch's message %d (or delivered another twice)", i)
		}
	}
}

// TestRepackedCopiesNotVerifiedAgain: a peer that repacks messages B
// accepted into new bundles (new gossip IDs, so pubsub's duplicate filter
// lets them through), or packs one message twice, makes B verify nothing
// again and deliver nothing twice; a bundle that adds a new message to old
// ones delivers the new one.
func TestRepackedCopiesNotVerifiedAgain(t *testing.T) {
	msgs, p := newBundlePair(t, 4)
	b, pa, partB, atB := p.b, p.pa, p.pb, &p.atB
	if _, err := pa.PublishBatch(t.Context(), msgs[:3]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B to deliver A's messages", func() bool { return len(atB.deliveries()) == 3 })

	r := newRogue(t, "tcp", b, partB)
	for _, data := range [][]byte{bundleOf(t, msgs[2], msgs[0], msgs[1]), bundleOf(t, msgs[0]), bundleOf(t, msgs[1], msgs[3], msgs[3])} {
		if err := r.topic.Publish(t.Context(), data); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "B to deliver the one new message", func() bool { return len(atB.deliveries()) == 4 })
	waitFor(t, 5*time.Second, "B to count six copies", func() bool { return testutil.ToFloat64(partB.m.dups) == 6 })
	if d := atB.deliveries()[3]; !bytes.Equal(d.Encoded, msgs[3]) || d.From != r.id.String() {
		t.Errorf("B's fourth delivery is not the rogue's new message")
	}
	if s := b.scores.Load(); s != nil && (*s)[r.id] < 0 {
		t.Errorf("the rogue was penalised (score %v) for copies of valid messages", (*s)[r.id])
	}
}

// FuzzGossipBundle: decoding gossip data never panics nor takes more than
// maxBundleMessages messages, what decodes is what the generated protobuf
// code decodes, and it encodes back to the same messages.
func FuzzGossipBundle(f *testing.F) {
	f.Add(bundleOf(f, []byte("a"), []byte("bc")))
	f.Add([]byte("hello"))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := decodeBundle(data)
		if err != nil {
			return
		}
		if len(msgs) == 0 || len(msgs) > maxBundleMessages || bundleCount(data) != len(msgs) {
			t.Fatalf("decoded %d messages, counted %d", len(msgs), bundleCount(data))
		}
		var b pb.GossipBundle
		if err := proto.Unmarshal(data, &b); err != nil || !slices.EqualFunc(b.Messages, msgs, bytes.Equal) {
			t.Fatalf("decoded %q; the generated code: %q, %v", msgs, b.Messages, err)
		}
		again, err := decodeBundle(bundleOf(t, msgs...))
		if err != nil || !slices.EqualFunc(again, msgs, bytes.Equal) {
			t.Fatalf("re-encoded bundle decodes to %q, %v; want %q", again, err, msgs)
		}
	})
}
