package overlay

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// marshalRequest encodes q as a pb.ResendRequest.
func marshalRequest(q streamr.ResendQuery) ([]byte, error) {
	kind, err := queryKind(&q)
	if err != nil {
		return nil, err
	}
	w := &pb.ResendRequest{
		StreamId:    string(q.Part.Stream),
		Partition:   int32(q.Part.Partition),
		Kind:        kind,
		PublisherId: q.Publisher,
		MsgChainId:  q.ChainID,
		MaxMessages: int32(min(max(q.Limit, 0), math.MaxInt32)),
	}
	switch kind {
	case pb.ResendRequest_LAST:
		w.Last = int32(q.Last)
	case pb.ResendRequest_RANGE:
		w.ToTimestamp, w.ToSequenceNumber = q.To.Timestamp, q.To.SequenceNumber
		fallthrough
	case pb.ResendRequest_FROM:
		w.FromTimestamp, w.FromSequenceNumber = q.From.Timestamp, q.From.SequenceNumber
	}
	return marshalControl(w, "resend query of "+q.Part.String())
}

// queryKind returns the wire query type of q and checks its fields.
func queryKind(q *streamr.ResendQuery) (pb.ResendRequest_Kind, error) {
	switch {
	case q.Last < 0:
		return 0, fmt.Errorf("resend query of %s: last %d is negative", q.Part, q.Last)
	case q.Last > math.MaxInt32:
		return 0, fmt.Errorf("resend query of %s: last %d exceeds %d", q.Part, q.Last, math.MaxInt32)
	case q.Last > 0:
		return pb.ResendRequest_LAST, nil
	case q.IsFrom():
		return pb.ResendRequest_FROM, nil
	case q.From.Compare(q.To) > 0:
		return 0, fmt.Errorf("resend query of %s: range from %s is after to %s", q.Part, q.From, q.To)
	}
	return pb.ResendRequest_RANGE, nil
}

// unmarshalRequest decodes and checks a ResendRequest. Unknown fields are
// skipped, so later versions may add filters that old servers ignore.
func unmarshalRequest(b []byte) (streamr.ResendQuery, error) {
	var w pb.ResendRequest
	if err := proto.Unmarshal(b, &w); err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("decode resend request: %w", err)
	}
	part, err := wirePart(w.GetStreamId(), w.GetPartition())
	if err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("resend request: %w", err)
	}
	if w.GetMaxMessages() < 0 {
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: max_messages %d must be 0 to %d", part, w.GetMaxMessages(), math.MaxInt32)
	}
	q := streamr.ResendQuery{Part: part, Publisher: w.GetPublisherId(), ChainID: w.GetMsgChainId(), Limit: int(w.GetMaxMessages())}
	from, err := wireRef(w.GetFromTimestamp(), w.GetFromSequenceNumber())
	if err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: from: %w", part, err)
	}
	to, err := wireRef(w.GetToTimestamp(), w.GetToSequenceNumber())
	if err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: to: %w", part, err)
	}
	switch w.GetKind() {
	case pb.ResendRequest_LAST:
		if w.GetLast() <= 0 {
			return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: last %d must be 1 to %d", part, w.GetLast(), math.MaxInt32)
		}
		q.Last = int(w.GetLast())
	case pb.ResendRequest_FROM:
		q.From, q.To = from, streamr.MaxRef
	case pb.ResendRequest_RANGE:
		if from.Compare(to) > 0 || to == (streamr.MessageRef{}) { // a zero To is no bound in a ResendQuery
			return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: range needs from %s at or before to %s, after 0/0", part, from, to)
		}
		q.From, q.To = from, to
	default:
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: unknown kind %d", part, w.GetKind())
	}
	return q, nil
}

// wirePart checks a request's stream partition.
func wirePart(stream string, partition int32) (streamr.StreamPartID, error) {
	id, err := streamr.ParseStreamID(stream)
	if err != nil {
		return streamr.StreamPartID{}, err
	}
	if partition < 0 || partition >= streamr.MaxPartitions {
		return streamr.StreamPartID{}, fmt.Errorf("partition %d of %s must be 0 to %d", partition, id, streamr.MaxPartitions-1)
	}
	return streamr.StreamPartID{Stream: id, Partition: int(partition)}, nil
}

// wireRef checks a reference; absent fields are zero, as in protobuf 3.
func wireRef(ts int64, seq int32) (streamr.MessageRef, error) {
	if seq < 0 {
		return streamr.MessageRef{}, fmt.Errorf("sequence number %d is negative", seq)
	}
	return streamr.MessageRef{Timestamp: ts, SequenceNumber: seq}, nil
}
