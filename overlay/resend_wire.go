package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/streamr"
)

// maxControlFrame bounds the request and the status header: both are a
// few dozen bytes, so anything larger is refused before it is read.
const maxControlFrame = 4 << 10

// resendKind is the request's query type (field 3).
type resendKind uint64

const (
	kindLast  resendKind = 1
	kindFrom  resendKind = 2
	kindRange resendKind = 3
)

// resendCode is the status header's answer code (field 1).
type resendCode uint64

const (
	codeOK          resendCode = 1 // messages follow
	codeNotStored   resendCode = 2 // no stored message matches
	codeBadRequest  resendCode = 3 // the request is malformed; message says why
	codeTooBusy     resendCode = 4 // all resend slots are taken; ask another peer
	codeUnavailable resendCode = 5 // the server failed to read its store
)

var codeNames = map[resendCode]string{
	codeOK: "ok", codeNotStored: "not_stored", codeBadRequest: "bad_request",
	codeTooBusy: "too_busy", codeUnavailable: "unavailable",
}

func (c resendCode) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_%d", uint64(c))
}

// Field numbers of ResendRequest and ResendStatus (see the protocol
// description on ResendProtocol).
const (
	reqStreamID    = 1
	reqPartition   = 2
	reqKind        = 3
	reqLast        = 4
	reqFromTime    = 5
	reqFromSeq     = 6
	reqToTime      = 7
	reqToSeq       = 8
	reqPublisherID = 9
	reqMsgChainID  = 10
	reqMaxMessages = 11

	statusCode      = 1
	statusMessage   = 2
	statusTruncated = 3
)

// queryKind returns the wire query type of q and checks its fields.
func queryKind(q *streamr.ResendQuery) (resendKind, error) {
	switch {
	case q.Last < 0:
		return 0, fmt.Errorf("resend query of %s: last %d is negative", q.Part, q.Last)
	case q.Last > math.MaxInt32:
		return 0, fmt.Errorf("resend query of %s: last %d exceeds %d", q.Part, q.Last, math.MaxInt32)
	case q.Last > 0:
		return kindLast, nil
	case q.IsFrom():
		return kindFrom, nil
	case q.From.Compare(q.To) > 0:
		return 0, fmt.Errorf("resend query of %s: range from %s is after to %s", q.Part, q.From, q.To)
	}
	return kindRange, nil
}

// marshalRequest encodes q as a ResendRequest.
func marshalRequest(q streamr.ResendQuery) ([]byte, error) {
	kind, err := queryKind(&q)
	if err != nil {
		return nil, err
	}
	b := protowire.AppendTag(nil, reqStreamID, protowire.BytesType)
	b = protowire.AppendString(b, string(q.Part.Stream))
	b = appendVarint(b, reqPartition, uint64(q.Part.Partition))
	b = appendVarint(b, reqKind, uint64(kind))
	switch kind {
	case kindLast:
		b = appendVarint(b, reqLast, uint64(q.Last))
	case kindRange:
		b = appendVarint(b, reqToTime, uint64(q.To.Timestamp))
		b = appendVarint(b, reqToSeq, uint64(int64(q.To.SequenceNumber)))
		fallthrough
	case kindFrom:
		b = appendVarint(b, reqFromTime, uint64(q.From.Timestamp))
		b = appendVarint(b, reqFromSeq, uint64(int64(q.From.SequenceNumber)))
	}
	if len(q.Publisher) > 0 {
		b = protowire.AppendTag(b, reqPublisherID, protowire.BytesType)
		b = protowire.AppendBytes(b, q.Publisher)
	}
	if q.ChainID != "" {
		b = protowire.AppendTag(b, reqMsgChainID, protowire.BytesType)
		b = protowire.AppendString(b, q.ChainID)
	}
	if q.Limit > 0 {
		b = appendVarint(b, reqMaxMessages, uint64(min(q.Limit, math.MaxInt32)))
	}
	if len(b) > maxControlFrame {
		return nil, fmt.Errorf("resend query of %s: encoded request of %d bytes exceeds %d", q.Part, len(b), maxControlFrame)
	}
	return b, nil
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// wireRequest holds a ResendRequest's fields as decoded.
type wireRequest struct {
	stream           string
	partition        int64
	kind             resendKind
	last             int64
	fromTime, toTime int64
	fromSeq, toSeq   int64
	publisher        []byte
	chain            string
	maxMessages      int64
}

// unmarshalRequest decodes and checks a ResendRequest. Unknown fields are
// skipped, so later versions may add filters that old servers ignore.
func unmarshalRequest(b []byte) (streamr.ResendQuery, error) {
	var w wireRequest
	if err := w.decode(b); err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("decode resend request: %w", err)
	}
	return w.query()
}

func (w *wireRequest) decode(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == reqStreamID || num == reqPublisherID || num == reqMsgChainID):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			w.setBytes(num, v)
			b = b[n:]
		case typ == protowire.VarintType && (num >= reqPartition && num <= reqToSeq || num == reqMaxMessages):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			w.setVarint(num, int64(v))
			b = b[n:]
		case num >= reqStreamID && num <= reqMaxMessages:
			return fmt.Errorf("field %d has wire type %d", num, typ)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

func (w *wireRequest) setBytes(num protowire.Number, v []byte) {
	switch num {
	case reqStreamID:
		w.stream = string(v)
	case reqPublisherID:
		w.publisher = append([]byte(nil), v...)
	default:
		w.chain = string(v)
	}
}

func (w *wireRequest) setVarint(num protowire.Number, v int64) {
	switch num {
	case reqPartition:
		w.partition = v
	case reqKind:
		w.kind = resendKind(v)
	case reqLast:
		w.last = v
	case reqFromTime:
		w.fromTime = v
	case reqFromSeq:
		w.fromSeq = v
	case reqToTime:
		w.toTime = v
	case reqMaxMessages:
		w.maxMessages = v
	default:
		w.toSeq = v
	}
}

// query checks the decoded fields and builds the query they describe.
func (w *wireRequest) query() (streamr.ResendQuery, error) {
	stream, err := streamr.ParseStreamID(w.stream)
	if err != nil {
		return streamr.ResendQuery{}, err
	}
	if w.partition < 0 || w.partition >= streamr.MaxPartitions {
		return streamr.ResendQuery{}, fmt.Errorf("partition %d of %s: must be 0 to %d", w.partition, stream, streamr.MaxPartitions-1)
	}
	if w.maxMessages < 0 || w.maxMessages > math.MaxInt32 {
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: max_messages %d must be 0 to %d", stream, w.maxMessages, math.MaxInt32)
	}
	q := streamr.ResendQuery{
		Part:      streamr.StreamPartID{Stream: stream, Partition: int(w.partition)},
		Publisher: w.publisher,
		ChainID:   w.chain,
		Limit:     int(w.maxMessages),
	}
	from, to, err := w.refs()
	if err != nil {
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: %w", q.Part, err)
	}
	switch w.kind {
	case kindLast:
		if w.last <= 0 || w.last > math.MaxInt32 {
			return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: last %d must be 1 to %d", q.Part, w.last, math.MaxInt32)
		}
		q.Last = int(w.last)
	case kindFrom:
		q.From, q.To = from, streamr.MaxRef
	case kindRange:
		if from.Compare(to) > 0 || to == (streamr.MessageRef{}) { // a zero To means "no bound" in streamr.ResendQuery
			return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: range needs from %s at or before to %s, after 0/0", q.Part, from, to)
		}
		q.From, q.To = from, to
	default:
		return streamr.ResendQuery{}, fmt.Errorf("resend request of %s: unknown kind %d", q.Part, w.kind)
	}
	return q, nil
}

// refs returns the from and to references; absent fields are zero, as in
// protobuf 3.
func (w *wireRequest) refs() (from, to streamr.MessageRef, err error) {
	for _, s := range []int64{w.fromSeq, w.toSeq} {
		if s < 0 || s > math.MaxInt32 {
			return from, to, fmt.Errorf("sequence number %d out of range", s)
		}
	}
	from = streamr.MessageRef{Timestamp: w.fromTime, SequenceNumber: int32(w.fromSeq)}
	to = streamr.MessageRef{Timestamp: w.toTime, SequenceNumber: int32(w.toSeq)}
	return from, to, nil
}

// resendStatus is the response header.
type resendStatus struct {
	code      resendCode
	message   string // why, for bad_request and unavailable
	truncated bool   // the server's limits cut the answer short
}

func (s resendStatus) marshal() []byte {
	b := appendVarint(nil, statusCode, uint64(s.code))
	if s.message != "" {
		msg := s.message
		if len(msg) > maxControlFrame/2 {
			msg = msg[:maxControlFrame/2]
		}
		b = protowire.AppendTag(b, statusMessage, protowire.BytesType)
		b = protowire.AppendString(b, msg)
	}
	if s.truncated {
		b = appendVarint(b, statusTruncated, 1)
	}
	return b
}

func unmarshalStatus(b []byte) (resendStatus, error) {
	var s resendStatus
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return s, fmt.Errorf("decode resend status: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == statusCode && typ == protowire.VarintType, num == statusTruncated && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if num == statusCode {
				s.code = resendCode(v)
			} else {
				s.truncated = v != 0
			}
		case num == statusMessage && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			s.message = string(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return s, fmt.Errorf("decode resend status field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	if s.code == 0 {
		return s, errors.New("decode resend status: no code")
	}
	return s, nil
}

// errControlFrameTooLarge reports a request or status over maxControlFrame.
var errControlFrameTooLarge = fmt.Errorf("frame exceeds %d bytes", maxControlFrame)

// readControlFrame reads one [uint32 BE length][body] frame of at most
// maxControlFrame bytes, reading nothing past it.
func readControlFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read frame length: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > maxControlFrame {
		return nil, fmt.Errorf("frame of %d bytes: %w", size, errControlFrameTooLarge)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read frame of %d bytes: %w", size, err)
	}
	return b, nil
}
