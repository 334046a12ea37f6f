package overlay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// storeReceipts serves a real store's receipts, converted as cmd/bridge
// does.
type storeReceipts struct{ s *storage.Store }

func (a storeReceipts) Receipts(part streamr.StreamPartID, publisher []byte) ([]streamr.ChainReceipt, error) {
	rs, err := a.s.Receipts(part, publisher)
	if err != nil {
		return nil, err
	}
	out := make([]streamr.ChainReceipt, len(rs))
	for i, r := range rs {
		out[i] = streamr.ChainReceipt(r)
	}
	return out, nil
}

// openStore opens a store in a temporary directory, closed at cleanup
// unless the test closed it.
func openStore(t *testing.T) *storage.Store {
	t.Helper()
	st, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// holdChains records in st, as bridge.Storer does, that it holds chain i
// of publisher in part up to (ts0+i, i%3) for each of n chains.
func holdChains(t *testing.T, st *storage.Store, part streamr.StreamPartID, publisher []byte, n int, ts0 int64) []streamr.ChainReceipt {
	t.Helper()
	var want []streamr.ChainReceipt
	states := make(map[string]streamr.ChainState)
	for i := range n {
		rc := streamr.ChainReceipt{ChainID: fmt.Sprintf("chain-%05d", i), Last: streamr.MessageRef{Timestamp: ts0 + int64(i), SequenceNumber: int32(i % 3)}}
		want = append(want, rc)
		key := "delivered/store\x00" + part.String() + "\x00" + streamr.UserID(publisher) + "\x00" + rc.ChainID
		states[key] = streamr.ChainState{ID: rc.ChainID, Last: &rc.Last}
		if len(states) == 2000 || i == n-1 { // keeps each transaction small
			if err := st.SaveChainStates(t.Context(), states); err != nil {
				t.Fatal(err)
			}
			clear(states)
		}
	}
	return want
}

func receiptNode(t *testing.T, bootstrap []string) *Node {
	t.Helper()
	cfg := loopbackConfig("tcp", bootstrap)
	cfg.DisableDHT = true
	return startNode(t, cfg)
}

// TestReceipts queries a storer backed by a real Badger store over TCP.
func TestReceipts(t *testing.T) {
	pub, other := newPublisher(t), newPublisher(t)
	part, part1 := pub.part(t, 0), pub.part(t, 1)
	st := openStore(t)
	want := holdChains(t, st, part, pub.key.PublisherID(), 5, 1_700_000_000_000)
	want1 := holdChains(t, st, part1, pub.key.PublisherID(), 2, 1)
	many := holdChains(t, st, part, other.key.PublisherID(), MaxReceipts+1, 1)

	storer := receiptNode(t, nil)
	storer.ServeReceipts(storeReceipts{st})
	empty := receiptNode(t, nil)
	empty.ServeReceipts(storeReceipts{openStore(t)})
	client := receiptNode(t, []string{storer.Addrs()[0], empty.Addrs()[0]})

	tests := []struct {
		name      string
		peer      *Node
		part      streamr.StreamPartID
		publisher []byte
		want      []streamr.ChainReceipt
	}{
		{"held chains", storer, part, pub.key.PublisherID(), want},
		{"other partition", storer, part1, pub.key.PublisherID(), want1},
		{"partition without data", storer, pub.part(t, 2), pub.key.PublisherID(), nil},
		{"node without data", empty, part, pub.key.PublisherID(), nil},
		{"more than MaxReceipts", storer, part, other.key.PublisherID(), many[:MaxReceipts]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got, err := client.QueryReceipts(ctx, tc.peer.ID(), tc.part, tc.publisher)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %d receipts, want %d: %.200v", len(got), len(tc.want), got)
			}
		})
	}
}

// TestReceiptErrors: queries that cannot be answered fail with the
// error that says why.
func TestReceiptErrors(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	closed := openStore(t)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	broken := receiptNode(t, nil)
	broken.ServeReceipts(storeReceipts{closed})
	silent := receiptNode(t, nil) // does not serve receipts
	client := receiptNode(t, []string{broken.Addrs()[0], silent.Addrs()[0]})
	tests := []struct {
		name      string
		peer      string
		publisher []byte
		want      error
	}{
		{"store fails", broken.ID(), pub.key.PublisherID(), ErrReceiptsUnavailable},
		{"protocol not served", silent.ID(), pub.key.PublisherID(), nil},
		{"bad peer ID", "not-a-peer", pub.key.PublisherID(), nil},
		{"no publisher", broken.ID(), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got, err := client.QueryReceipts(ctx, tc.peer, part, tc.publisher)
			if err == nil || got != nil {
				t.Fatalf("QueryReceipts = %v, %v; want an error", got, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestPartitionPeers lists the members of joined partitions only.
func TestPartitionPeers(t *testing.T) {
	pub := newPublisher(t)
	part, other := pub.part(t, 0), pub.part(t, 1)
	a := receiptNode(t, nil)
	b := receiptNode(t, a.Addrs())
	c := receiptNode(t, a.Addrs())
	for _, n := range []*Node{a, b, c} {
		join(t, n, part, nil)
	}
	join(t, b, other, nil)
	want := []string{b.ID(), c.ID()}
	slices.Sort(want)
	waitFor(t, 10*time.Second, "a to see b and c in the partition", func() bool {
		return slices.Equal(a.PartitionPeers(part), want)
	})
	if got := a.PartitionPeers(other); len(got) != 0 {
		t.Fatalf("PartitionPeers of a partition not joined = %v, want none", got)
	}
}

// rawReceipt sends frame (length included) and returns the status.
func rawReceipt(t *testing.T, from, to *Node, frame []byte) *pb.Status {
	t.Helper()
	s, err := from.host.NewStream(t.Context(), to.host.ID(), ReceiptProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	b, err := readControlFrame(s)
	if err != nil {
		t.Fatal(err)
	}
	st, err := unmarshalStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestReceiptRefusesBadRequests sends malformed and oversized requests.
func TestReceiptRefusesBadRequests(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	storer := receiptNode(t, nil)
	storer.ServeReceipts(storeReceipts{openStore(t)})
	client := receiptNode(t, storer.Addrs())
	valid, err := marshalReceiptRequest(part, pub.key.PublisherID())
	if err != nil {
		t.Fatal(err)
	}
	withStream := func(stream string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, rreqStreamID, protowire.BytesType), stream)
	}
	badStream := protowire.AppendBytes(protowire.AppendTag(withStream("not a stream"), rreqPublisherID, protowire.BytesType), pub.key.PublisherID())
	tests := []struct {
		name  string
		frame []byte
		want  pb.Status_Code
	}{
		{"valid", lengthPrefixed(valid), pb.Status_OK},
		{"oversized", lengthPrefixed(make([]byte, maxControlFrame+1)), pb.Status_BAD_REQUEST},
		{"garbage", lengthPrefixed([]byte{0xff, 0xff, 0xff}), pb.Status_BAD_REQUEST},
		{"empty", lengthPrefixed(nil), pb.Status_BAD_REQUEST},
		{"no publisher", lengthPrefixed(withStream(string(part.Stream))), pb.Status_BAD_REQUEST},
		{"bad stream ID", lengthPrefixed(badStream), pb.Status_BAD_REQUEST},
		{"partition out of range", lengthPrefixed(appendVarint(valid, rreqPartition, streamr.MaxPartitions)), pb.Status_BAD_REQUEST},
		{"wrong wire type skipped, as protobuf does", lengthPrefixed(appendVarint(valid, rreqPublisherID, 1)), pb.Status_OK},
		{"truncated field", lengthPrefixed(valid[:len(valid)-1]), pb.Status_BAD_REQUEST},
		{"unknown field skipped", lengthPrefixed(appendVarint(valid, 99, 1)), pb.Status_OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := rawReceipt(t, client, storer, tc.frame)
			if st.GetCode() != tc.want {
				t.Fatalf("status %s (%q), want %s", st.GetCode(), st.GetMessage(), tc.want)
			}
			if tc.want == pb.Status_BAD_REQUEST && st.GetMessage() == "" {
				t.Error("bad request without a reason")
			}
		})
	}
}

// rogueReceipts answers every receipt query with status and frames.
func rogueReceipts(n *Node, status []byte, frames [][]byte) {
	n.host.SetStreamHandler(ReceiptProtocol, func(s network.Stream) {
		defer s.Close()
		if _, err := readControlFrame(s); err != nil {
			s.Reset()
			return
		}
		w := streamr.NewRawWriter(s)
		for _, f := range append([][]byte{status}, frames...) {
			if err := w.WriteFrame(f); err != nil {
				s.Reset()
				return
			}
		}
	})
}

// TestReceiptRejectsBadAnswers: the client refuses answers that break
// the protocol.
func TestReceiptRejectsBadAnswers(t *testing.T) {
	pub := newPublisher(t)
	part := pub.part(t, 0)
	rogue := receiptNode(t, nil)
	client := receiptNode(t, rogue.Addrs())
	ok := statusFrame(pb.Status_OK, "", false)
	receipt := func(chain string, seq int64) []byte {
		b := protowire.AppendTag(nil, receiptChainID, protowire.BytesType)
		b = protowire.AppendString(b, chain)
		return appendVarint(appendVarint(b, receiptTimestamp, 5), receiptSeqNo, uint64(seq))
	}
	tooMany := make([][]byte, MaxReceipts+1)
	for i := range tooMany {
		tooMany[i] = receipt(fmt.Sprintf("c%05d", i), 0)
	}
	tests := []struct {
		name   string
		status []byte
		frames [][]byte
		want   error
	}{
		{"busy", statusFrame(pb.Status_TOO_BUSY, "", false), nil, ErrReceiptsBusy},
		{"refused", statusFrame(pb.Status_BAD_REQUEST, "no", false), nil, ErrReceiptsRefused},
		{"unknown status", statusFrame(77, "", false), nil, ErrInvalidReceipts},
		{"not stored is not a receipt status", statusFrame(pb.Status_NOT_STORED, "", false), nil, ErrInvalidReceipts},
		{"out of order", ok, [][]byte{receipt("b", 0), receipt("a", 0)}, ErrInvalidReceipts},
		{"duplicate chain", ok, [][]byte{receipt("a", 0), receipt("a", 1)}, ErrInvalidReceipts},
		{"no chain ID", ok, [][]byte{receipt("", 0)}, ErrInvalidReceipts},
		{"negative sequence number", ok, [][]byte{receipt("a", -1)}, ErrInvalidReceipts},
		{"garbage", ok, [][]byte{{0xff, 0xff}}, ErrInvalidReceipts},
		{"oversized frame", ok, [][]byte{make([]byte, maxControlFrame+1)}, ErrInvalidReceipts},
		{"too many", ok, tooMany, ErrInvalidReceipts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rogueReceipts(rogue, tc.status, tc.frames)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got, err := client.QueryReceipts(ctx, rogue.ID(), part, pub.key.PublisherID())
			if !errors.Is(err, tc.want) {
				t.Fatalf("QueryReceipts = %d receipts, %v; want %v", len(got), err, tc.want)
			}
		})
	}
}

func TestReceiptWireRoundTrip(t *testing.T) {
	pub := newPublisher(t)
	for _, part := range []streamr.StreamPartID{pub.part(t, 0), pub.part(t, streamr.MaxPartitions-1)} {
		b, err := marshalReceiptRequest(part, pub.key.PublisherID())
		if err != nil {
			t.Fatal(err)
		}
		got, err := unmarshalReceiptRequest(b)
		if err != nil || got.part != part || string(got.publisher) != string(pub.key.PublisherID()) {
			t.Fatalf("request round trip = %v, %x, %v", got.part, got.publisher, err)
		}
	}
	for _, rc := range []streamr.ChainReceipt{
		{ChainID: "c", Last: streamr.MessageRef{}},
		{ChainID: "chain-id", Last: streamr.MessageRef{Timestamp: -1, SequenceNumber: 0}},
		{ChainID: "x", Last: streamr.MessageRef{Timestamp: 1<<63 - 1, SequenceNumber: 1<<31 - 1}},
	} {
		got, err := unmarshalReceipt(mustMarshalReceipt(t, rc))
		if err != nil || got != rc {
			t.Fatalf("receipt round trip of %v = %v, %v", rc, got, err)
		}
	}
}

func FuzzReceiptRequest(f *testing.F) {
	pub := newPublisher(f)
	valid, err := marshalReceiptRequest(pub.part(f, 3), pub.key.PublisherID())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte{})
	f.Add(appendVarint(valid, 99, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := unmarshalReceiptRequest(b)
		if err != nil {
			return
		}
		again, err := marshalReceiptRequest(q.part, q.publisher)
		if err != nil {
			t.Fatalf("decoded request does not encode: %v", err)
		}
		q2, err := unmarshalReceiptRequest(again)
		if err != nil || q2.part != q.part || string(q2.publisher) != string(q.publisher) {
			t.Fatalf("re-encoded request decodes to %v, %x, %v; want %v, %x", q2.part, q2.publisher, err, q.part, q.publisher)
		}
	})
}

func FuzzChainReceipt(f *testing.F) {
	f.Add(mustMarshalReceipt(f, streamr.ChainReceipt{ChainID: "chain", Last: streamr.MessageRef{Timestamp: 1_700_000_000_000, SequenceNumber: 2}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := unmarshalReceipt(b)
		if err != nil {
			return
		}
		got, err := unmarshalReceipt(mustMarshalReceipt(t, rc))
		if err != nil || got != rc {
			t.Fatalf("re-encoded receipt %v decodes to %v, %v", rc, got, err)
		}
	})
}

func mustMarshalReceipt(t testing.TB, rc streamr.ChainReceipt) []byte {
	t.Helper()
	b, err := marshalReceipt(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
