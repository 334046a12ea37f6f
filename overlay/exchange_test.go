package overlay

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/streamr/pb"
)

// Field numbers of tributary.proto's messages, for tests that build
// hostile requests byte by byte.
const (
	reqStreamID    = 1
	reqPartition   = 2
	reqKind        = 3
	reqLast        = 4
	reqFromTime    = 5
	reqFromSeq     = 6
	reqToTime      = 7
	reqPublisherID = 9

	rreqStreamID    = 1
	rreqPartition   = 2
	rreqPublisherID = 3

	receiptChainID   = 1
	receiptTimestamp = 2
	receiptSeqNo     = 3
)

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// statusFrame encodes a status as a server sends it.
func statusFrame(code pb.Status_Code, message string, truncated bool) []byte {
	return marshalStatus(&pb.Status{Code: code, Message: message, Truncated: truncated})
}
