package bridge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// fakeReceiptNet answers receipt queries from a fixed table.
type fakeReceiptNet struct {
	peers    []string
	receipts map[string][]streamr.ChainReceipt // by peer; a missing peer fails
}

func (n fakeReceiptNet) QueryReceipts(_ context.Context, peer string, _ streamr.StreamPartID, _ []byte) ([]streamr.ChainReceipt, error) {
	r, ok := n.receipts[peer]
	if !ok {
		return nil, errors.New("unreachable")
	}
	return r, nil
}

func (n fakeReceiptNet) PartitionPeers(streamr.StreamPartID) []string { return n.peers }

func TestReceiptsGuard(t *testing.T) {
	self := make([]byte, 20)
	self[19] = 1
	other := make([]byte, 20)
	part := streamr.StreamPartID{Stream: "0x0000000000000000000000000000000000000001/r"}
	net := fakeReceiptNet{
		peers: []string{"storer-a", "storer-b", "down"},
		receipts: map[string][]streamr.ChainReceipt{
			"storer-a": {{ChainID: "c", Last: streamr.MessageRef{Timestamp: 10}}},
			"storer-b": {{ChainID: "c", Last: streamr.MessageRef{Timestamp: 5}}},
		},
	}
	tests := []struct {
		name      string
		policy    ReceiptPolicy
		peers     []string
		publisher []byte
		chain     string
		ts        int64
		want      bool
	}{
		{"none keeps nothing back", ReceiptsNone, nil, self, "c", 100, true},
		{"other publishers are not ours", ReceiptsAnyStorer, nil, other, "c", 100, true},
		{"any storer holds it", ReceiptsAnyStorer, nil, self, "c", 8, true},
		{"no storer holds it yet", ReceiptsAnyStorer, nil, self, "c", 11, false},
		{"unknown chain", ReceiptsAnyStorer, nil, self, "d", 1, false},
		{"all listed hold it", ReceiptsAllListed, []string{"storer-a", "storer-b"}, self, "c", 5, true},
		{"one listed is behind", ReceiptsAllListed, []string{"storer-a", "storer-b"}, self, "c", 6, false},
		{"a listed peer is down", ReceiptsAllListed, []string{"storer-a", "down"}, self, "c", 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReceipts(ReceiptConfig{Policy: tc.policy, Peers: tc.peers, Publisher: self})
			if err != nil {
				t.Fatal(err)
			}
			r.poll(t.Context(), net, func() ([]streamr.StreamPartID, error) { return []streamr.StreamPartID{part}, nil })
			if got := r.Acknowledged(part, tc.publisher, tc.chain, streamr.MessageRef{Timestamp: tc.ts}); got != tc.want {
				t.Fatalf("Acknowledged = %v, want %v", got, tc.want)
			}
		})
	}
}

// Without a receipt policy the partition's peers are still asked, so
// /receipts and the status page show how far they hold our chains
// (it answered {} before); retention keeps nothing back for them.
func TestReceiptsNoneStillReports(t *testing.T) {
	self := []byte{1}
	part := streamr.StreamPartID{Stream: "x.eth/r"}
	net := fakeReceiptNet{peers: []string{"storer"}, receipts: map[string][]streamr.ChainReceipt{
		"storer": {{ChainID: "c", Last: streamr.MessageRef{Timestamp: 7}}},
	}}
	r, err := NewReceipts(ReceiptConfig{Policy: ReceiptsNone, Publisher: self, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, net, func() ([]streamr.StreamPartID, error) { return []streamr.StreamPartID{part}, nil })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for r.Progress()[part.String()]["storer"]["c"].Timestamp != 7 {
		if time.Now().After(deadline) {
			t.Fatalf("Progress = %v after the first poll, want storer at 7", r.Progress())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !r.Acknowledged(part, self, "c", streamr.MessageRef{Timestamp: 100}) {
		t.Fatal("policy none kept a message back")
	}
}

// A receiver that answers less than it claimed before is not believed:
// retention may have acted on the earlier claim.
func TestReceiptsNeverGoBack(t *testing.T) {
	r, err := NewReceipts(ReceiptConfig{Policy: ReceiptsAnyStorer, Publisher: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	part := streamr.StreamPartID{Stream: "x.eth/r"}
	r.record(part, "s", []streamr.ChainReceipt{{ChainID: "c", Last: streamr.MessageRef{Timestamp: 10}}})
	r.record(part, "s", []streamr.ChainReceipt{{ChainID: "c", Last: streamr.MessageRef{Timestamp: 3}}})
	if got := r.Progress()[part.String()]["s"]["c"].Timestamp; got != 10 {
		t.Fatalf("position went back to %d", got)
	}
}

func TestReceiptsConfigErrors(t *testing.T) {
	if _, err := NewReceipts(ReceiptConfig{Policy: "some"}); err == nil {
		t.Error("unknown policy accepted")
	}
	if _, err := NewReceipts(ReceiptConfig{Policy: ReceiptsAllListed}); err == nil {
		t.Error("all-listed without peers accepted")
	}
}
