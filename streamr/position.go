package streamr

import (
	"encoding/hex"
	"strconv"
	"unsafe"
)

// StoredPositions names the positions of the storage node role
// (bridge.Storer's Orderer): how far it holds each chain it stores, which
// is what it acknowledges in receipts (storage.Store.Receipts).
const StoredPositions = "store"

// PositionPrefix is the start of the keys under which the positions
// named orderer keep how far each chain of publisher in part was
// delivered: "delivered/<orderer>\x00<part>\x00<publisher 0x hex>\x00".
// The keys are stored: changing the format loses every saved position.
func PositionPrefix(orderer string, part StreamPartID, publisher []byte) string {
	return "delivered/" + orderer + "\x00" + part.String() + "\x00" + UserID(publisher) + "\x00"
}

// PositionKey is the key of the position of id's chain: PositionPrefix
// followed by the chain ID.
func PositionKey(orderer string, id *MessageID) string {
	// Sized up front: one allocation (a receiving gateway makes a key per
	// message it delivers).
	n := len("delivered/") + len(orderer) + 1 + len(id.StreamID) + 1 + 11 + 3 + 2*len(id.PublisherID) + 1 + len(id.MsgChainID)
	b := AppendPositionKey(make([]byte, 0, n), orderer, id)
	return unsafe.String(unsafe.SliceData(b), len(b)) // b is not written again
}

// AppendPositionKey appends id's PositionKey to b. With room in b it does
// not allocate: a subscriber looks every message's chain up by it.
func AppendPositionKey(b []byte, orderer string, id *MessageID) []byte {
	b = append(b, "delivered/"...)
	b = append(b, orderer...)
	b = append(b, 0)
	b = append(b, id.StreamID...)
	b = append(b, '#')
	b = strconv.AppendInt(b, int64(id.StreamPartition), 10)
	b = append(b, 0, '0', 'x')
	b = hex.AppendEncode(b, id.PublisherID)
	b = append(b, 0)
	return append(b, id.MsgChainID...)
}
