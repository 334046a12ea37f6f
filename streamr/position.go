package streamr

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
	return PositionPrefix(orderer, id.StreamPart(), id.PublisherID) + id.MsgChainID
}
