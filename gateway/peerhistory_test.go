package gateway

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// pagedPeers answers resends from msgs (in stream order) a page of at
// most q.Limit at a time, bounds inclusive, as a storage node does.
type pagedPeers struct {
	msgs  []streamr.Envelope
	calls int
	err   error
}

func (p *pagedPeers) Resend(_ context.Context, q streamr.ResendQuery) ([]streamr.Envelope, error) {
	p.calls++
	if p.err != nil {
		return nil, p.err
	}
	var out []streamr.Envelope
	for _, e := range p.msgs {
		ref := e.Msg.ID.Ref()
		if ref.Compare(q.From) >= 0 && ref.Compare(q.To) <= 0 && len(out) < q.Limit {
			out = append(out, e)
		}
	}
	return out, nil
}

// TestPeerHistoryPages: a range this gateway holds nothing of comes from
// the peers page by page, each message once and in order, also where a
// page ends inside a run of messages at one position (two chains); a
// range held here is answered from here; no peer holding any is an
// empty answer.
func TestPeerHistoryPages(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	part, _ := streamr.NewStreamPartID("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x", 0)
	var msgs []streamr.Envelope
	for i := range 3*peerHistoryPage + 7 {
		m := &streamr.StreamMessage{ID: streamr.MessageID{
			StreamID: part.Stream, Timestamp: int64(1000 + i/3), SequenceNumber: 0,
			PublisherID: []byte{byte(i % 3)}, MsgChainID: "c",
		}}
		msgs = append(msgs, streamr.Envelope{Msg: m, Encoded: []byte(fmt.Sprint(i))})
	}
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].Msg.ID.Ref().Compare(msgs[j].Msg.ID.Ref()) < 0 })
	peers := &pagedPeers{msgs: msgs}
	h := peerHistory{db, peers}
	var got []string
	if err := h.Messages(part, 0, 1<<62, func(b []byte) error { got = append(got, string(b)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d messages from the peers, want %d", len(got), len(msgs))
	}
	for i, g := range got {
		if g != fmt.Sprint(i) {
			t.Fatalf("message %d is %s: out of order or twice", i, g)
		}
	}
	if peers.calls < 4 {
		t.Fatalf("%d pages asked for, want at least 4", peers.calls)
	}

	none := peerHistory{db, &pagedPeers{err: streamr.ErrNoPeers}}
	if err := none.Messages(part, 0, 1<<62, func([]byte) error { return errors.New("no message expected") }); err != nil {
		t.Fatalf("no peers: %v, want an empty answer", err)
	}
}
