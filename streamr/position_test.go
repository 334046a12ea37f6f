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
	if got := PositionPrefix(StoredPositions, id.StreamPart(), id.PublisherID) + id.MsgChainID; got != want {
		t.Errorf("PositionPrefix + chain = %q, want %q", got, want)
	}
	if got := string(AppendPositionKey([]byte("x"), StoredPositions, id)); got != "x"+want {
		t.Errorf("AppendPositionKey = %q, want %q", got, "x"+want)
	}
	if n := testing.AllocsPerRun(100, func() { AppendPositionKey(make([]byte, 0, 256)[:0], StoredPositions, id) }); n > 1 {
		t.Errorf("AppendPositionKey allocates %.0f times with room in its buffer", n)
	}
	long := &MessageID{StreamID: id.StreamID, StreamPartition: -1 << 31, PublisherID: make([]byte, 20), MsgChainID: "chain"}
	if n := testing.AllocsPerRun(100, func() { PositionKey(StoredPositions, long) }); n > 1 {
		t.Errorf("PositionKey allocates %.0f times, want once", n)
	}
}
