package overlay

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// resendSet is a stream partition with two publishers whose chains have
// the same (timestamp, sequence number) references, so answers must keep
// storage order among equal references.
type resendSet struct {
	owner, listed *publisher
	part, other   streamr.StreamPartID
	base          int64
	msgs          []*streamr.StreamMessage // of part, then one of other
	policy        AllowList
}

const resendPerChain = 30

func newResendSet(t *testing.T) *resendSet {
	t.Helper()
	s := &resendSet{owner: newPublisher(t), listed: newPublisher(t), base: 1_700_000_000_000}
	s.part, s.other = s.owner.part(t, 0), s.owner.part(t, 1)
	s.owner.chain, s.listed.chain = "chain-owner", "chain-listed"
	s.policy = AllowList{s.owner.stream: {s.listed.key.PublisherID()}}
	for i := range resendPerChain {
		ts, seq := s.base+int64(i/3)*10, int32(i%3)
		for _, p := range []*publisher{s.owner, s.listed} {
			s.msgs = append(s.msgs, message(t, p.key, s.part, p.chain, ts, seq))
		}
	}
	s.msgs = append(s.msgs, message(t, s.owner.key, s.other, s.owner.chain, s.base, 0))
	return s
}

// ref returns the reference of the i-th message of a chain.
func (s *resendSet) ref(i int) streamr.MessageRef {
	return streamr.MessageRef{Timestamp: s.base + int64(i/3)*10, SequenceNumber: int32(i % 3)}
}

// store writes the set into a real Badger store, as a storage node keeps
// messages received from the overlay.
func (s *resendSet) store(t *testing.T) *storage.Store {
	t.Helper()
	st, err := storage.Open(storage.Options{Dir: t.TempDir(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	rs := make([]streamr.Envelope, len(s.msgs))
	for i, m := range s.msgs {
		rs[i] = streamr.Envelope{Msg: m, Encoded: encode(t, m)}
	}
	if _, err := st.StoreReceived(t.Context(), rs, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

// memHistory is an in-memory History in storage order. If gate is set,
// Messages signals entered and waits for gate to close.
type memHistory struct {
	frames  [][]byte
	entered chan struct{}
	gate    chan struct{}
}

func newMemHistory(t *testing.T, frames ...[]byte) *memHistory {
	t.Helper()
	h := &memHistory{frames: frames}
	slices.SortStableFunc(h.frames, func(a, b []byte) int {
		ma, mb := mustDecode(t, a), mustDecode(t, b)
		return cmp.Or(ma.ID.Ref().Compare(mb.ID.Ref()), bytes.Compare(ma.ID.PublisherID, mb.ID.PublisherID),
			cmp.Compare(ma.ID.MsgChainID, mb.ID.MsgChainID))
	})
	return h
}

func mustDecode(t *testing.T, b []byte) *streamr.StreamMessage {
	t.Helper()
	m, err := streamr.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (h *memHistory) Messages(part streamr.StreamPartID, from, to int64, fn func([]byte) error) error {
	if h.gate != nil {
		h.entered <- struct{}{}
		<-h.gate
	}
	for _, f := range h.frames {
		m, err := streamr.Unmarshal(f)
		if err != nil {
			return err
		}
		if m.ID.StreamPart() != part || m.ID.Timestamp < from || m.ID.Timestamp > to {
			continue
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// export is the raw export of q from h: the frames a storage node's
// format=raw answer holds, computed here without the server's code.
func export(t *testing.T, h History, q streamr.ResendQuery) [][]byte {
	t.Helper()
	from, to := int64(0), int64(math.MaxInt64)
	if q.Last == 0 {
		from = q.From.Timestamp
		if q.To != (streamr.MessageRef{}) {
			to = q.To.Timestamp
		}
	}
	var out [][]byte
	err := h.Messages(q.Part, from, to, func(enc []byte) error {
		m, err := streamr.Unmarshal(enc)
		if err != nil {
			return err
		}
		ref := m.ID.Ref()
		switch {
		case q.Last == 0 && ref.Compare(q.From) < 0,
			q.Last == 0 && q.To != (streamr.MessageRef{}) && ref.Compare(q.To) > 0,
			q.Publisher != nil && !bytes.Equal(m.ID.PublisherID, q.Publisher),
			q.ChainID != "" && m.ID.MsgChainID != q.ChainID:
			return nil
		}
		out = append(out, bytes.Clone(enc))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if q.Last > 0 && len(out) > q.Last {
		out = out[len(out)-q.Last:]
	}
	return out
}

// resendNode starts a TCP node on 127.0.0.1 without DHT, allowing the
// set's listed publisher, with tweak applied to its resend limits.
func resendNode(t *testing.T, s *resendSet, bootstrap []string, tweak func(*ResendConfig)) *Node {
	t.Helper()
	cfg := loopbackConfig("tcp", bootstrap)
	cfg.DisableDHT = true
	cfg.Policy = s.policy
	cfg.MaxClockSkew = 0 // default: the set's timestamps are in the past anyway
	if tweak != nil {
		tweak(&cfg.Resend)
	}
	return startNode(t, cfg)
}

func frames(res ResendResult) [][]byte {
	out := make([][]byte, len(res.Messages))
	for i, d := range res.Messages {
		out[i] = d.Encoded
	}
	return out
}

func equalFrames(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d differs from the raw export: got %x, want %x", i, got[i], want[i])
		}
	}
}

// TestResendMatchesRawExport asks a storer backed by a real Badger store
// for last/from/range queries with and without filters, and compares each
// answer byte for byte with the raw export of the same range.
func TestResendMatchesRawExport(t *testing.T) {
	s := newResendSet(t)
	st := s.store(t)
	storer := resendNode(t, s, nil, nil)
	storer.ServeResend(st)
	client := resendNode(t, s, storer.Addrs(), nil)

	owner, listed := s.owner.key.PublisherID(), s.listed.key.PublisherID()
	tests := []struct {
		name string
		q    streamr.ResendQuery
		want int // messages expected, to keep the export honest
	}{
		{"last 5", streamr.ResendQuery{Last: 5}, 5},
		{"last 1", streamr.ResendQuery{Last: 1}, 1},
		{"last more than stored", streamr.ResendQuery{Last: 1000}, 2 * resendPerChain},
		{"last 4 of listed publisher", streamr.ResendQuery{Last: 4, Publisher: listed}, 4},
		{"last 3 of owner chain", streamr.ResendQuery{Last: 3, Publisher: owner, ChainID: s.owner.chain}, 3},
		{"from", streamr.ResendQuery{From: s.ref(16)}, 2 * (resendPerChain - 16)},
		{"from with max to", streamr.ResendQuery{From: s.ref(16), To: streamr.MaxRef}, 2 * (resendPerChain - 16)},
		{"from of owner", streamr.ResendQuery{From: s.ref(20), Publisher: owner}, resendPerChain - 20},
		{"from zero", streamr.ResendQuery{}, 2 * resendPerChain},
		{"range", streamr.ResendQuery{From: s.ref(4), To: s.ref(11)}, 16},
		{"range of listed chain", streamr.ResendQuery{From: s.ref(4), To: s.ref(11), Publisher: listed, ChainID: s.listed.chain}, 8},
		{"range of chain only", streamr.ResendQuery{From: s.ref(4), To: s.ref(11), ChainID: s.owner.chain}, 8},
		{"single message", streamr.ResendQuery{From: s.ref(7), To: s.ref(7), Publisher: owner}, 1},
		{"gap fill", streamr.ResendQuery{From: streamr.MessageRef{Timestamp: s.ref(5).Timestamp, SequenceNumber: s.ref(5).SequenceNumber + 1}, To: s.ref(9), Publisher: owner, ChainID: s.owner.chain}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Part = s.part
			want := export(t, st, tc.q)
			if len(want) != tc.want {
				t.Fatalf("raw export holds %d messages, want %d", len(want), tc.want)
			}
			res, err := client.ResendFrom(t.Context(), storer.ID(), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			equalFrames(t, frames(res), want)
			if res.Truncated || res.Peer != storer.ID() {
				t.Errorf("truncated %v, peer %s; want false, %s", res.Truncated, res.Peer, storer.ID())
			}
		})
	}

	notStored := []streamr.ResendQuery{
		{Part: s.part, From: s.ref(4), To: s.ref(11), ChainID: "no-such-chain"},
		{Part: s.part, Last: 3, Publisher: bytes.Repeat([]byte{7}, 20)},
		{Part: s.part, From: streamr.MessageRef{Timestamp: s.base + 1_000_000}},
		{Part: s.owner.part(t, 2), Last: 1},
	}
	for _, q := range notStored {
		if _, err := client.ResendFrom(t.Context(), storer.ID(), q); !errors.Is(err, ErrNotStored) {
			t.Errorf("ResendFrom(%+v) = %v, want ErrNotStored", q, err)
		}
	}
	if got := testutil.ToFloat64(storer.metrics.resend.messages); got == 0 {
		t.Error("resend_messages_total not counted")
	}
}

// TestResendAsksNextPeer: the partition's members are asked first; one
// stores nothing, one serves a forged message; the client ends at the
// storer, which is connected but not a member, and penalises the forger.
func TestResendAsksNextPeer(t *testing.T) {
	s := newResendSet(t)
	genuine := encode(t, s.msgs[0])
	forged := mustDecode(t, genuine)
	forged.Content().Content = []byte(`{"temp":99}`)

	empty := resendNode(t, s, nil, nil)
	empty.ServeResend(newMemHistory(t))
	forger := resendNode(t, s, nil, nil)
	forger.ServeResend(newMemHistory(t, encode(t, forged)))
	storer := resendNode(t, s, nil, nil)
	storer.ServeResend(newMemHistory(t, genuine))
	client := resendNode(t, s, slices.Concat(empty.Addrs(), forger.Addrs(), storer.Addrs()), nil)
	for _, n := range []*Node{empty, forger} {
		join(t, n, s.part, nil)
	}
	topic := topicName(s.part)
	waitFor(t, 10*time.Second, "client to see two partition members", func() bool {
		return client.ConnectedPeers() == 3 && len(client.ps.ListPeers(topic)) == 2
	})

	q := streamr.ResendQuery{Part: s.part, Last: 1}
	res, err := client.resend(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if res.Peer != storer.ID() {
		t.Fatalf("answered by %s, want the storer %s", res.Peer, storer.ID())
	}
	equalFrames(t, frames(res), [][]byte{genuine})

	forgerID, emptyID := forger.host.ID(), empty.host.ID()
	if !client.resendPenalised(forgerID) || client.resendPenalised(emptyID) {
		t.Errorf("penalised: forger %v, empty %v; want true, false", client.resendPenalised(forgerID), client.resendPenalised(emptyID))
	}
	cands := client.resendCandidates(s.part)
	if len(cands) != 2 || cands[0] != emptyID || cands[1] != storer.host.ID() {
		t.Errorf("candidates after the penalty = %v, want [empty storer]", cands)
	}
	msgs, err := client.Resend(t.Context(), q)
	if err != nil || len(msgs) != 1 || msgs[0].Msg.ID.Ref() != s.msgs[0].ID.Ref() || msgs[0].Msg.ID.MsgChainID != s.msgs[0].ID.MsgChainID {
		t.Fatalf("Resend = %v, %v; want the genuine message", msgs, err)
	}
	if _, err := client.ResendFrom(t.Context(), empty.ID(), q); !errors.Is(err, ErrNotStored) {
		t.Errorf("ResendFrom(empty) = %v, want ErrNotStored", err)
	}
}

// TestResendNoPeers: a node alone has nobody to ask.
func TestResendNoPeers(t *testing.T) {
	s := newResendSet(t)
	n := resendNode(t, s, nil, nil)
	if _, err := n.Resend(t.Context(), streamr.ResendQuery{Part: s.part, Last: 1}); !errors.Is(err, streamr.ErrNoPeers) {
		t.Fatalf("Resend = %v, want streamr.ErrNoPeers", err)
	}
}

// rogueServer answers every resend request with status and frames.
func rogueServer(n *Node, status []byte, frames [][]byte) {
	n.host.SetStreamHandler(ResendProtocol, func(s network.Stream) {
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

// TestResendKeepsValidatedOnCut: an answer cut short after valid messages
// (here the peer stalls and the caller's deadline passes; in the field a
// receiver too slow to verify a page in time) returns what was validated,
// so the gap's next request starts after it instead of asking for the same
// page forever.
func TestResendKeepsValidatedOnCut(t *testing.T) {
	s := newResendSet(t)
	rogue := resendNode(t, s, nil, nil)
	client := resendNode(t, s, rogue.Addrs(), nil)
	release := make(chan struct{})
	defer close(release)
	frames := [][]byte{statusFrame(pb.Status_OK, "", false), encode(t, s.msgs[0]), encode(t, s.msgs[1]), encode(t, s.msgs[2])}
	rogue.host.SetStreamHandler(ResendProtocol, func(st network.Stream) {
		defer st.Close()
		if _, err := readControlFrame(st); err != nil {
			st.Reset()
			return
		}
		w := streamr.NewRawWriter(st)
		for _, f := range frames {
			if err := w.WriteFrame(f); err != nil {
				st.Reset()
				return
			}
		}
		<-release // the rest of the page never comes
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	res, err := client.ResendFrom(ctx, rogue.ID(), streamr.ResendQuery{Part: s.part, From: s.ref(0), To: s.ref(9)})
	if err != nil {
		t.Fatalf("ResendFrom cut after 3 valid messages: %v, want them", err)
	}
	if len(res.Messages) != 3 || !res.Truncated {
		t.Fatalf("got %d messages (truncated %v), want the 3 validated ones, truncated", len(res.Messages), res.Truncated)
	}
	for i, d := range res.Messages {
		if got, want := d.Envelope.Msg.ID.Ref(), s.msgs[i].ID.Ref(); got != want {
			t.Errorf("message %d is %s, want %s", i, got, want)
		}
	}
	if client.resendPenalised(rogue.host.ID()) {
		t.Error("a peer cut off by our deadline is penalised")
	}
}

// TestResendRejectsBadAnswers: a peer that answers with anything but
// valid, matching, ordered messages within the limits has its answer
// discarded, and is penalised unless the fault may be ours.
func TestResendRejectsBadAnswers(t *testing.T) {
	s := newResendSet(t)
	rogue := resendNode(t, s, nil, nil)
	client := resendNode(t, s, rogue.Addrs(), func(c *ResendConfig) { c.MaxMessages = 4 })
	ok := statusFrame(pb.Status_OK, "", false)
	enc := func(i int) []byte { return encode(t, s.msgs[i]) }
	tampered := mustDecode(t, enc(0))
	tampered.Content().Content = []byte(`{"temp":99}`)
	stranger := newPublisher(t)
	future := message(t, s.owner.key, s.part, s.owner.chain, time.Now().Add(time.Hour).UnixMilli(), 0)
	range0to9 := streamr.ResendQuery{Part: s.part, From: s.ref(0), To: s.ref(9)}

	tests := []struct {
		name     string
		q        streamr.ResendQuery
		status   []byte
		frames   [][]byte
		want     error
		penalise bool
	}{
		{"forged signature", range0to9, ok, [][]byte{enc(0), encode(t, tampered)}, ErrInvalidMessage, true},
		{"other partition", range0to9, ok, [][]byte{enc(len(s.msgs) - 1)}, ErrInvalidMessage, true},
		{"publisher not allowed", range0to9, ok, [][]byte{encode(t, message(t, stranger.key, s.part, "c", s.base, 0))}, ErrInvalidMessage, true},
		{"garbage frame", range0to9, ok, [][]byte{{0xff, 0x01}}, ErrInvalidMessage, true},
		{"outside the range", streamr.ResendQuery{Part: s.part, From: s.ref(3), To: s.ref(9)}, ok, [][]byte{enc(0)}, ErrInvalidResend, true},
		{"other chain", streamr.ResendQuery{Part: s.part, Last: 2, ChainID: s.owner.chain}, ok, [][]byte{enc(1)}, ErrInvalidResend, true},
		{"out of order", range0to9, ok, [][]byte{enc(4), enc(0)}, ErrInvalidResend, true},
		{"more than last", streamr.ResendQuery{Part: s.part, Last: 2}, ok, [][]byte{enc(0), enc(1), enc(2)}, ErrInvalidResend, true},
		{"more than the client's limit", range0to9, ok, [][]byte{enc(0), enc(1), enc(2), enc(3), enc(4)}, ErrInvalidResend, true},
		{"future timestamp", range0to9, ok, [][]byte{encode(t, future)}, ErrInvalidMessage, false},
		{"ok without messages", range0to9, ok, nil, ErrNotStored, false},
		{"too busy", range0to9, statusFrame(pb.Status_TOO_BUSY, "", false), nil, ErrTooBusy, false},
		{"unknown status", range0to9, statusFrame(99, "", false), nil, errUnknownOutcome, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rogueServer(rogue, tc.status, tc.frames)
			if err := client.host.Peerstore().Put(rogue.host.ID(), penaltyKey, time.Time{}); err != nil {
				t.Fatal(err)
			}
			_, err := client.ResendFrom(t.Context(), rogue.ID(), tc.q)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ResendFrom = %v, want %v", err, tc.want)
			}
			if got := client.resendPenalised(rogue.host.ID()); got != tc.penalise {
				t.Errorf("penalised = %v, want %v", got, tc.penalise)
			}
		})
	}
}

// rawResend sends frame (a raw request frame, length included) to the
// server and returns the status it answers with.
func rawResend(t *testing.T, from, to *Node, frame []byte) *pb.Status {
	t.Helper()
	s, err := from.host.NewStream(t.Context(), to.host.ID(), ResendProtocol)
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

func lengthPrefixed(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestResendRefusesBadRequests sends malformed and oversized requests.
func TestResendRefusesBadRequests(t *testing.T) {
	s := newResendSet(t)
	storer := resendNode(t, s, nil, nil)
	storer.ServeResend(newMemHistory(t, encode(t, s.msgs[0])))
	client := resendNode(t, s, storer.Addrs(), nil)

	valid, err := marshalRequest(streamr.ResendQuery{Part: s.part, Last: 1})
	if err != nil {
		t.Fatal(err)
	}
	request := func(f func(b []byte) []byte) []byte {
		return lengthPrefixed(f(requestPrefix(s.part)))
	}
	tests := []struct {
		name  string
		frame []byte
		want  pb.Status_Code
	}{
		{"valid", lengthPrefixed(valid), pb.Status_OK},
		{"oversized", lengthPrefixed(make([]byte, maxControlFrame+1)), pb.Status_BAD_REQUEST},
		{"garbage", lengthPrefixed([]byte{0xff, 0xff, 0xff}), pb.Status_BAD_REQUEST},
		{"empty", lengthPrefixed(nil), pb.Status_BAD_REQUEST},
		{"unknown kind", request(func(b []byte) []byte { return appendVarint(b, reqKind, 9) }), pb.Status_BAD_REQUEST},
		{"last zero", request(func(b []byte) []byte {
			return appendVarint(appendVarint(b, reqKind, uint64(pb.ResendRequest_LAST)), reqLast, 0)
		}), pb.Status_BAD_REQUEST},
		{"range backwards", request(func(b []byte) []byte {
			return appendVarint(appendVarint(appendVarint(b, reqKind, uint64(pb.ResendRequest_RANGE)), reqFromTime, 10), reqToTime, 5)
		}), pb.Status_BAD_REQUEST},
		{"negative sequence", request(func(b []byte) []byte {
			return appendVarint(appendVarint(b, reqKind, uint64(pb.ResendRequest_FROM)), reqFromSeq, math.MaxUint64)
		}), pb.Status_BAD_REQUEST},
		{"partition out of range", lengthPrefixed(appendVarint(valid, reqPartition, streamr.MaxPartitions)), pb.Status_BAD_REQUEST},
		{"wrong wire type skipped, as protobuf does", lengthPrefixed(appendVarint(valid, reqPublisherID, 1)), pb.Status_OK},
		{"unknown field skipped", lengthPrefixed(appendVarint(valid, 99, 1)), pb.Status_OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := rawResend(t, client, storer, tc.frame)
			if st.GetCode() != tc.want {
				t.Fatalf("status %s (%q), want %s", st.GetCode(), st.GetMessage(), tc.want)
			}
			if tc.want == pb.Status_BAD_REQUEST && st.GetMessage() == "" {
				t.Error("bad request without a reason")
			}
		})
	}
	// The server counts an answer after sending it: wait for the last one.
	bad := storer.metrics.resend.requests.WithLabelValues("bad_request")
	waitFor(t, 5*time.Second, "8 bad requests to be counted", func() bool { return testutil.ToFloat64(bad) == 8 })
}

// requestPrefix returns the start of a request for part: stream and
// partition, without a kind.
func requestPrefix(part streamr.StreamPartID) []byte {
	b := protowire.AppendTag(nil, reqStreamID, protowire.BytesType)
	b = protowire.AppendString(b, string(part.Stream))
	return appendVarint(b, reqPartition, uint64(part.Partition))
}

// TestResendLimits: answers stop at the server's message and byte limits
// and say so; a "last" answer keeps the newest messages.
func TestResendLimits(t *testing.T) {
	s := newResendSet(t)
	h := newMemHistory(t, s.mustEncodeAll(t)...)
	msgSize := len(h.frames[0]) // all messages of the set have about this size
	tests := []struct {
		name      string
		limits    func(*ResendConfig)
		q         streamr.ResendQuery
		want      func(all [][]byte) [][]byte
		truncated bool
	}{
		{"range over max messages", func(c *ResendConfig) { c.MaxMessages = 7 }, streamr.ResendQuery{From: s.ref(0), To: streamr.MaxRef},
			func(all [][]byte) [][]byte { return all[:7] }, true},
		{"last over max messages", func(c *ResendConfig) { c.MaxMessages = 7 }, streamr.ResendQuery{Last: 20},
			func(all [][]byte) [][]byte { return all[len(all)-7:] }, true},
		{"last within max messages", func(c *ResendConfig) { c.MaxMessages = 7 }, streamr.ResendQuery{Last: 7},
			func(all [][]byte) [][]byte { return all[len(all)-7:] }, false},
		{"range exactly max messages", func(c *ResendConfig) { c.MaxMessages = 8 }, streamr.ResendQuery{From: s.ref(0), To: s.ref(3)},
			func(all [][]byte) [][]byte { return all[:8] }, false},
		{"range over max bytes", func(c *ResendConfig) { c.MaxBytes = 3*msgSize + msgSize/2 }, streamr.ResendQuery{From: s.ref(0)},
			func(all [][]byte) [][]byte { return all[:3] }, true},
		{"last over max bytes", func(c *ResendConfig) { c.MaxBytes = 3*msgSize + msgSize/2 }, streamr.ResendQuery{Last: 10},
			func(all [][]byte) [][]byte { return all[len(all)-3:] }, true},
		{"one message over max bytes", func(c *ResendConfig) { c.MaxBytes = 1 }, streamr.ResendQuery{From: s.ref(0)},
			func(all [][]byte) [][]byte { return all[:1] }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			storer := resendNode(t, s, nil, tc.limits)
			storer.ServeResend(h)
			client := resendNode(t, s, storer.Addrs(), nil)
			tc.q.Part = s.part
			res, err := client.ResendFrom(t.Context(), storer.ID(), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			all := export(t, h, streamr.ResendQuery{Part: s.part})
			equalFrames(t, frames(res), tc.want(all))
			if res.Truncated != tc.truncated {
				t.Errorf("truncated = %v, want %v", res.Truncated, tc.truncated)
			}
		})
	}
}

// TestResendBufferSplit: an answer larger than what is left of
// resend_buffer_bytes is read once up to the buffer, counted to its end
// and its rest read again;
// wherever the split falls (also between two messages of one reference,
// from the set's two publishers), the answer and its truncated flag are
// those of an answer read whole, and the second read is counted.
func TestResendBufferSplit(t *testing.T) {
	s := newResendSet(t)
	st := s.store(t)
	msgSize := len(encode(t, s.msgs[0])) // all messages of the set have about this size
	queries := []struct {
		name   string
		q      streamr.ResendQuery
		limits func(*ResendConfig)
	}{
		{"from zero", streamr.ResendQuery{}, nil},
		{"range", streamr.ResendQuery{From: s.ref(4), To: s.ref(11)}, nil},
		{"last", streamr.ResendQuery{Last: 9}, nil},
		{"page", streamr.ResendQuery{From: s.ref(2), Limit: 11}, nil},
		{"over max messages", streamr.ResendQuery{}, func(c *ResendConfig) { c.MaxMessages = 13 }},
		{"over max bytes", streamr.ResendQuery{}, func(c *ResendConfig) { c.MaxBytes = 9*msgSize + msgSize/2 }},
	}
	whole := resendNode(t, s, nil, nil)
	whole.ServeResend(st)
	client := resendNode(t, s, whole.Addrs(), nil)
	for _, q := range queries {
		for _, buffered := range []int{0, 1, 2, 3, 6, 20} {
			t.Run(fmt.Sprintf("%s/buffer %d messages", q.name, buffered), func(t *testing.T) {
				q.q.Part = s.part
				reference := whole
				if q.limits != nil {
					reference = resendNode(t, s, nil, q.limits)
					reference.ServeResend(st)
					knowAddrs(client, reference)
				}
				want, err := client.ResendFrom(t.Context(), reference.ID(), q.q)
				if err != nil {
					t.Fatal(err)
				}
				split := resendNode(t, s, nil, func(c *ResendConfig) {
					if q.limits != nil {
						q.limits(c)
					}
					c.BufferBytes = buffered*msgSize + msgSize/2
				})
				split.ServeResend(st)
				knowAddrs(client, split)
				for range 2 { // the second answer finds the buffer given back
					got, err := client.ResendFrom(t.Context(), split.ID(), q.q)
					if err != nil {
						t.Fatal(err)
					}
					equalFrames(t, frames(got), frames(want))
					if got.Truncated != want.Truncated {
						t.Errorf("truncated = %v, want %v as read whole", got.Truncated, want.Truncated)
					}
				}
				wantRewalks := 0.0
				if len(want.Messages) > buffered && q.q.Last == 0 {
					wantRewalks = 2
				}
				if got := testutil.ToFloat64(split.metrics.resend.rewalks); got != wantRewalks {
					t.Errorf("%d messages, %d buffered: %v rewalks counted in two answers, want %v", len(want.Messages), buffered, got, wantRewalks)
				}
			})
		}
	}
}

// knowAddrs lets n dial other.
func knowAddrs(n, other *Node) {
	n.host.Peerstore().AddAddrs(other.host.ID(), other.host.Addrs(), time.Hour)
}

func (s *resendSet) mustEncodeAll(t *testing.T) [][]byte {
	t.Helper()
	out := make([][]byte, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = encode(t, m)
	}
	return out
}

// bigMessages returns n messages of part with about size bytes of content.
func bigMessages(t *testing.T, s *resendSet, n, size int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		m := message(t, s.owner.key, s.part, s.owner.chain, s.base+int64(i), 0)
		m.Content().Content = bytes.Repeat([]byte{byte(i)}, size)
		m.Content().ContentType = streamr.ContentBinary
		if err := streamr.SignMessage(t.Context(), s.owner.key, m); err != nil {
			t.Fatal(err)
		}
		out[i] = encode(t, m)
	}
	return out
}

// TestResendSlowReader: a client that stops reading fills the stream's
// flow-control window; the server's write deadline then aborts the answer
// and frees its slot, without leaking goroutines (TestMain's goleak).
func TestResendSlowReader(t *testing.T) {
	s := newResendSet(t)
	storer := resendNode(t, s, nil, func(c *ResendConfig) { c.MaxStreams = 1; c.WriteTimeout = 200 * time.Millisecond })
	storer.ServeResend(newMemHistory(t, bigMessages(t, s, 8, 600<<10)...))
	client := resendNode(t, s, storer.Addrs(), nil)

	req, err := marshalRequest(streamr.ResendQuery{Part: s.part, From: streamr.MessageRef{}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.host.NewStream(t.Context(), storer.host.ID(), ResendProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Reset()
	if _, err := st.Write(lengthPrefixed(req)); err != nil {
		t.Fatal(err)
	}
	if _, err := readControlFrame(st); err != nil { // the status; then stop reading
		t.Fatal(err)
	}
	aborted := storer.metrics.resend.requests.WithLabelValues(statusAborted)
	waitFor(t, 10*time.Second, "the server to abort the stalled answer", func() bool { return testutil.ToFloat64(aborted) == 1 })

	// The slot is free again: a well-behaved client is served.
	res, err := client.ResendFrom(t.Context(), storer.ID(), streamr.ResendQuery{Part: s.part, Last: 2})
	if err != nil || len(res.Messages) != 2 {
		t.Fatalf("ResendFrom after the abort = %d messages, %v; want 2", len(res.Messages), err)
	}
}

// gatedStorer starts a node serving s's first message whose history
// walks wait for h.gate (each announced on h.entered, of capacity
// entries), with tweak applied to its resend limits.
func gatedStorer(t *testing.T, s *resendSet, entries int, tweak func(*ResendConfig)) (*Node, *memHistory) {
	t.Helper()
	h := newMemHistory(t, encode(t, s.msgs[0]))
	h.entered, h.gate = make(chan struct{}, entries), make(chan struct{})
	storer := resendNode(t, s, nil, tweak)
	storer.ServeResend(h)
	return storer, h
}

// TestResendTooBusy: with every slot taken, a request is answered
// TOO_BUSY at once; the busy answer still completes.
func TestResendTooBusy(t *testing.T) {
	s := newResendSet(t)
	storer, h := gatedStorer(t, s, 1, func(c *ResendConfig) { c.MaxStreams = 1 })
	client := resendNode(t, s, storer.Addrs(), nil)
	q := streamr.ResendQuery{Part: s.part, Last: 1}

	type answer struct {
		res ResendResult
		err error
	}
	first := make(chan answer, 1)
	go func() {
		res, err := client.ResendFrom(t.Context(), storer.ID(), q)
		first <- answer{res, err}
	}()
	<-h.entered
	_, err := client.ResendFrom(t.Context(), storer.ID(), q)
	close(h.gate)
	if !errors.Is(err, ErrTooBusy) {
		t.Errorf("second request: %v, want ErrTooBusy", err)
	}
	<-h.entered // the first answer's second History walk
	a := <-first
	if a.err != nil || len(a.res.Messages) != 1 {
		t.Fatalf("first request = %d messages, %v; want 1", len(a.res.Messages), a.err)
	}
	busy := storer.metrics.resend.requests.WithLabelValues("too_busy")
	waitFor(t, 5*time.Second, "too_busy to be counted once", func() bool { return testutil.ToFloat64(busy) == 1 })
}

// TestResendKeepsToPeerShare: a node with more gap fills in flight than
// a peer admits from it (two orderers of 4) waits for its own slots
// instead of sending them to be refused TOO_BUSY (which stalled chains
// for resend_retry at high load): every request is answered and the
// storer refuses none.
func TestResendKeepsToPeerShare(t *testing.T) {
	const perPeer, requests = 2, 5
	s := newResendSet(t)
	share := func(c *ResendConfig) { c.MaxStreams, c.MaxStreamsPerPeer, c.ReservedStreams = 8, perPeer, 0 }
	storer, h := gatedStorer(t, s, 2*requests, share)
	client := resendNode(t, s, storer.Addrs(), share)
	waitFor(t, 10*time.Second, "client to connect", func() bool { return client.ConnectedPeers() == 1 })

	errs := make(chan error, requests)
	for range requests {
		go func() {
			msgs, err := client.Resend(t.Context(), streamr.ResendQuery{Part: s.part, Last: 1})
			if err == nil && len(msgs) != 1 {
				err = fmt.Errorf("%d messages, want 1", len(msgs))
			}
			errs <- err
		}()
	}
	for range perPeer {
		<-h.entered
	}
	time.Sleep(200 * time.Millisecond) // the others, if sent, reach the storer
	if got := refusedCount(storer, ruleResendPerPeer); got != 0 {
		t.Errorf("storer refused %v requests beyond the per-peer share; the client should wait for its slots", got)
	}
	close(h.gate)
	for range requests {
		if err := <-errs; err != nil {
			t.Errorf("Resend: %v", err)
		}
	}
}

// TestResendRetriesBusy: when the only peer is busy (every slot taken by
// others), Resend asks it again after a short pause and is answered
// once a slot is free, within the caller's deadline.
func TestResendRetriesBusy(t *testing.T) {
	s := newResendSet(t)
	storer, h := gatedStorer(t, s, 8, func(c *ResendConfig) { c.MaxStreams = 1 })
	holder := resendNode(t, s, storer.Addrs(), nil)
	client := resendNode(t, s, storer.Addrs(), nil)
	waitFor(t, 10*time.Second, "client to connect", func() bool { return client.ConnectedPeers() == 1 })
	q := streamr.ResendQuery{Part: s.part, Last: 1}

	held := make(chan error, 1)
	go func() {
		_, err := holder.ResendFrom(t.Context(), storer.ID(), q)
		held <- err
	}()
	<-h.entered // the storer's only slot is taken
	got := make(chan error, 1)
	go func() {
		_, err := client.Resend(t.Context(), q)
		got <- err
	}()
	busy := storer.metrics.resend.requests.WithLabelValues("too_busy")
	waitFor(t, 5*time.Second, "the client to be refused", func() bool { return testutil.ToFloat64(busy) >= 1 })
	close(h.gate)
	if err := <-held; err != nil {
		t.Fatalf("holder: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Resend after the busy answer: %v, want the message once the slot is free", err)
	}
	if n := testutil.ToFloat64(client.metrics.resend.busyRetries); n < 1 {
		t.Errorf("busy retries counted %v, want at least 1", n)
	}
}

// TestResendPeerTimeout: Resend gives up on a peer that does not answer
// within PeerTimeout and asks the next.
func TestResendPeerTimeout(t *testing.T) {
	s := newResendSet(t)
	genuine := encode(t, s.msgs[0])
	stuck := newMemHistory(t, genuine)
	stuck.entered, stuck.gate = make(chan struct{}, 2), make(chan struct{})
	defer close(stuck.gate)
	slow := resendNode(t, s, nil, nil)
	slow.ServeResend(stuck)
	join(t, slow, s.part, nil)
	storer := resendNode(t, s, nil, nil)
	storer.ServeResend(newMemHistory(t, genuine))
	client := resendNode(t, s, slices.Concat(slow.Addrs(), storer.Addrs()), func(c *ResendConfig) { c.PeerTimeout = 300 * time.Millisecond })
	waitFor(t, 10*time.Second, "client to see the slow member", func() bool {
		return client.ConnectedPeers() == 2 && len(client.ps.ListPeers(topicName(s.part))) == 1
	})
	res, err := client.resend(t.Context(), streamr.ResendQuery{Part: s.part, Last: 1})
	if err != nil || res.Peer != storer.ID() {
		t.Fatalf("resend = peer %s, %v; want the storer", res.Peer, err)
	}
}

// TestResendSkipsPeerWithOurSlotsHeld: while every one of our request
// slots to the first candidate is held (its answers are slow), Resend
// waits for one only PeerTimeout and is answered by the next peer.
func TestResendSkipsPeerWithOurSlotsHeld(t *testing.T) {
	s := newResendSet(t)
	genuine := encode(t, s.msgs[0])
	held := resendNode(t, s, nil, nil)
	held.ServeResend(newMemHistory(t, genuine))
	join(t, held, s.part, nil)
	storer := resendNode(t, s, nil, nil)
	storer.ServeResend(newMemHistory(t, genuine))
	client := resendNode(t, s, slices.Concat(held.Addrs(), storer.Addrs()), func(c *ResendConfig) {
		c.PeerTimeout, c.MaxStreamsPerPeer = 300*time.Millisecond, 1
	})
	waitFor(t, 10*time.Second, "client to see the member", func() bool {
		return client.ConnectedPeers() == 2 && len(client.ps.ListPeers(topicName(s.part))) == 1
	})
	heldID, err := peer.Decode(held.ID())
	if err != nil {
		t.Fatal(err)
	}
	release, err := client.asks.take(t.Context(), heldID) // a slow answer of the member in progress
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	res, err := client.resend(t.Context(), streamr.ResendQuery{Part: s.part, Last: 1})
	if err != nil || res.Peer != storer.ID() {
		t.Fatalf("resend = peer %s, %v; want the storer", res.Peer, err)
	}
}

func TestResendRequestRoundTrip(t *testing.T) {
	s := newResendSet(t)
	tests := []streamr.ResendQuery{
		{Part: s.part, Last: 5},
		{Part: s.other, Last: math.MaxInt32, Publisher: s.owner.key.PublisherID(), ChainID: "c"},
		{Part: s.part, From: s.ref(4), To: streamr.MaxRef},
		{Part: s.part, From: streamr.MessageRef{Timestamp: -5, SequenceNumber: 3}, To: streamr.MaxRef, ChainID: "x"},
		{Part: s.part, From: s.ref(4), To: s.ref(4), Publisher: s.listed.key.PublisherID()},
	}
	for _, q := range tests {
		b, err := marshalRequest(q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := unmarshalRequest(b)
		if err != nil {
			t.Fatalf("unmarshal %+v: %v", q, err)
		}
		if got.Part != q.Part || got.Last != q.Last || got.From != q.From || got.To != q.To ||
			!bytes.Equal(got.Publisher, q.Publisher) || got.ChainID != q.ChainID {
			t.Errorf("round trip of %+v = %+v", q, got)
		}
	}
	invalid := []streamr.ResendQuery{
		{Part: s.part, Last: -1},
		{Part: s.part, Last: math.MaxInt32 + 1},
		{Part: s.part, From: s.ref(5), To: s.ref(4)},
		{Part: s.part, Last: 1, ChainID: string(make([]byte, maxControlFrame))},
	}
	for _, q := range invalid {
		if _, err := marshalRequest(q); err == nil {
			t.Errorf("marshalRequest accepted %+v", q)
		}
	}
}

// FuzzResendRequest: decoding never panics, and what decodes re-encodes
// to the same query.
func FuzzResendRequest(f *testing.F) {
	part := streamr.StreamPartID{Stream: "0x1111111111111111111111111111111111111111/s", Partition: 3}
	for _, q := range []streamr.ResendQuery{
		{Part: part, Last: 3},
		{Part: part, From: streamr.MessageRef{Timestamp: 9, SequenceNumber: 1}, ChainID: "c"},
		{Part: part, From: streamr.MessageRef{Timestamp: 9}, To: streamr.MessageRef{Timestamp: 10}, Publisher: []byte{1, 2}},
	} {
		b, err := marshalRequest(q)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := unmarshalRequest(b)
		if err != nil {
			return
		}
		again, err := marshalRequest(q)
		if err != nil {
			t.Fatalf("decoded query %+v does not encode: %v", q, err)
		}
		q2, err := unmarshalRequest(again)
		if err != nil || q2.Part != q.Part || q2.Last != q.Last || q2.From != q.From || q2.To != q.To ||
			!bytes.Equal(q2.Publisher, q.Publisher) || q2.ChainID != q.ChainID {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", q, q2, err)
		}
	})
}

// FuzzResendStatus: decoding a status header never panics.
func FuzzResendStatus(f *testing.F) {
	f.Add(statusFrame(pb.Status_OK, "", true))
	f.Add(statusFrame(pb.Status_BAD_REQUEST, "why", false))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := unmarshalStatus(b)
		if err == nil && st.GetCode() == 0 {
			t.Fatal("status without code accepted")
		}
	})
}

// BenchmarkResend measures a "from" answer of 1,000 small messages (the
// size of sensor readings) over TCP on 127.0.0.1, with validation of
// every message at the client.
func BenchmarkResend(b *testing.B) {
	s := &resendSet{owner: newPublisher(b), base: 1_700_000_000_000}
	s.part = s.owner.part(b, 0)
	frames := make([][]byte, 1000)
	size := 0
	for i := range frames {
		frames[i] = s.owner.signed(b, s.part, s.base+int64(i), 0)
		size += len(frames[i])
	}
	h := &memHistory{frames: frames}
	storer, client := benchResendNodes(b)
	storer.ServeResend(h)
	q := streamr.ResendQuery{Part: s.part}
	b.SetBytes(int64(size))
	b.ResetTimer()
	for b.Loop() {
		res, err := client.ResendFrom(b.Context(), storer.ID(), q)
		if err != nil || len(res.Messages) != len(frames) {
			b.Fatalf("ResendFrom = %d messages, %v", len(res.Messages), err)
		}
	}
	b.ReportMetric(float64(len(frames)*b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchResendNodes(b *testing.B) (storer, client *Node) {
	b.Helper()
	open := func(bootstrap []string) *Node {
		cfg := loopbackConfig("tcp", bootstrap)
		cfg.DisableDHT = true
		n, err := start(cfg, nodeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := n.Close(); err != nil {
				b.Error(err)
			}
		})
		return n
	}
	storer = open(nil)
	return storer, open(storer.Addrs())
}
