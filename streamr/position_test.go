package streamr

import "testing"

// TestPositionKeyFormat pins the stored key format: gateways upgraded in
// place must find their saved positions and receipts.
func TestPositionKeyFormat(t *testing.T) {
	id := &MessageID{StreamID: "0x1234567890abcdef1234567890abcdef12345678/s", StreamPartition: 2, PublisherID: []byte{0xab, 0x01}, MsgChainID: "c\x00d"}
	want := "delivered/store\x000x1234567890abcdef1234567890abcdef12345678/s#2\x000xab01\x00c\x00d"
	if got := PositionKey(StoredPositions, id); got != want {
		t.Errorf("PositionKey = %q, want %q", got, want)
	}
}
