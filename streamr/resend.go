package streamr

import (
	"bytes"
	"errors"
	"math"
)

// ErrNoPeers reports a publish or resend on a stream partition whose
// overlay has no connected member: nothing was sent, so the caller keeps
// the messages and retries.
var ErrNoPeers = errors.New("no peers in the stream partition's overlay")

// MaxRef is after every message: the upper bound of a "from" query.
var MaxRef = MessageRef{Timestamp: math.MaxInt64, SequenceNumber: math.MaxInt32}

// ResendQuery asks for stored messages of one stream partition, like the
// Streamr storage node's resend queries (last / from / range, with
// optional publisher and chain filters). The HTTP API, the overlay's
// resend protocol and the gap filling of subscribers all use it.
type ResendQuery struct {
	Part StreamPartID

	// Last > 0 asks for the newest Last messages (a "last" query; From and
	// To are ignored). Otherwise From and To are inclusive bounds. A zero
	// To means no upper bound, the same as MaxRef (a "from" query): the
	// zero value of the bound is the useful one, since no range can end
	// at 0/0 in a real stream.
	Last     int
	From, To MessageRef

	Publisher []byte // only this publisher's messages, if set
	ChainID   string // only this message chain, if set

	// Limit > 0 asks for at most Limit messages: the answer is a page
	// (ask again after its last message); 0 leaves it to the answering
	// node's limits.
	Limit int
}

// IsFrom reports whether q is a "from" query: no count and no upper
// bound.
func (q *ResendQuery) IsFrom() bool {
	return q.Last == 0 && (q.To == MessageRef{} || q.To == MaxRef)
}

// UpperBound returns the inclusive upper bound of q: To, or MaxRef for a
// "last" or "from" query.
func (q *ResendQuery) UpperBound() MessageRef {
	if q.Last > 0 || q.To == (MessageRef{}) {
		return MaxRef
	}
	return q.To
}

// Matches reports whether a message with this ID answers q, apart from
// the count of a "last" query (which only the whole history can tell).
func (q *ResendQuery) Matches(id *MessageID) bool {
	ref := id.Ref()
	switch {
	case q.Last == 0 && (ref.Compare(q.From) < 0 || ref.Compare(q.UpperBound()) > 0):
		return false
	case len(q.Publisher) > 0 && !bytes.Equal(id.PublisherID, q.Publisher):
		return false
	case q.ChainID != "" && id.MsgChainID != q.ChainID:
		return false
	}
	return true
}

// ChainReceipt is a node's claim that it holds every message of one of a
// publisher's chains up to and including Last (a delivery receipt).
type ChainReceipt struct {
	ChainID string
	Last    MessageRef
}

// Envelope is a decoded message with the bytes it was signed, sent or
// stored as: whoever passes a message on forwards Encoded verbatim.
type Envelope struct {
	Msg     *StreamMessage
	Encoded []byte
}
