package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// History reads stored messages of a stream partition whose timestamps
// are within [from, to] (ms), in (timestamp, sequence number) order;
// encoded is valid only during the call. storage.Store satisfies it.
type History interface {
	Messages(part streamr.StreamPartID, from, to int64, fn func(encoded []byte) error) error
}

// ServeResend answers ResendProtocol requests from h, within the node's
// ResendConfig limits. Call it once, at startup; a later call replaces h.
func (n *Node) ServeResend(h History) {
	srv := &resendServer{
		history: h,
		cfg:     n.cfg.Resend,
		buffers: &byteBudget{free: int64(n.cfg.Resend.BufferBytes)},
		admit:   newResendAdmission(n.cfg.Resend, n.publishesOn),
		refused: n.metrics.refused,
		m:       n.metrics.resend,
		log:     n.log.With("protocol", ResendProtocol),
	}
	n.host.SetStreamHandler(ResendProtocol, srv.handle)
}

type resendServer struct {
	history History
	cfg     ResendConfig
	buffers *byteBudget // bytes of answers held, all answers together
	admit   *resendAdmission
	refused *refusals
	m       *resendMetrics
	log     *slog.Logger
}

// errStop ends a History walk early.
var errStop = errors.New("stop")

func (srv *resendServer) handle(s network.Stream) {
	log := srv.log.With("peer", s.Conn().RemotePeer().String())
	status, err := srv.answer(s, log)
	if err != nil {
		s.Reset()
		srv.m.requests.WithLabelValues(statusAborted).Inc()
		log.Info("resend answer aborted", "err", err)
		return
	}
	s.Close()
	srv.m.requests.WithLabelValues(codeLabel(status)).Inc()
}

// answer reads the request and writes the answer. It returns the status
// sent, or an error if the stream failed.
func (srv *resendServer) answer(s network.Stream, log *slog.Logger) (pb.Status_Code, error) {
	q, bad, err := readRequest(s, unmarshalRequest)
	if err != nil {
		return 0, err
	}
	if bad != nil {
		return srv.refuse(s, bad)
	}
	release, rule := srv.admit.admit(s.Conn().RemotePeer(), &q)
	if release == nil {
		srv.refused.refuse(rule, 1, "resend request refused: too busy", "peer", s.Conn().RemotePeer().String(), "stream_part", q.Part.String())
		return srv.refuse(s, &pb.Status{Code: pb.Status_TOO_BUSY})
	}
	defer release()
	p, err := srv.plan(&q)
	if err != nil {
		log.Warn("resend failed reading the store", "stream_part", q.Part.String(), "err", err)
		return srv.refuse(s, &pb.Status{Code: pb.Status_UNAVAILABLE, Message: err.Error()})
	}
	defer srv.buffers.give(len(p.buffered.data))
	if p.count == 0 {
		return srv.refuse(s, &pb.Status{Code: pb.Status_NOT_STORED})
	}
	if err := srv.send(s, &q, p); err != nil {
		return 0, err
	}
	log.Debug("resend answered", "stream_part", q.Part.String(), "messages", p.count, "truncated", p.truncated, "rewalked", p.rest.count > 0)
	return pb.Status_OK, nil
}

// refuse sends a status without messages.
func (srv *resendServer) refuse(s network.Stream, st *pb.Status) (pb.Status_Code, error) {
	return st.GetCode(), writeStatus(s, srv.cfg.WriteTimeout, st)
}

// resendPlan is what an answer will hold, decided before its status is
// sent: count messages, of which the first are buffered (read by plan
// already) and the rest are read again from the history, from the first
// one at ref from (after skipping skip earlier matches with that same
// ref, of other chains).
type resendPlan struct {
	count     int
	truncated bool
	buffered  answerBuffer
	rest      resendRest
}

// resendRest locates the messages of an answer that plan did not buffer.
type resendRest struct {
	from  streamr.MessageRef
	skip  int
	count int
}

// byteBudget is a number of bytes shared out, taken and given back.
type byteBudget struct{ free int64 }

// take reserves n bytes if that many are left.
func (b *byteBudget) take(n int) bool {
	if atomic.AddInt64(&b.free, -int64(n)) >= 0 {
		return true
	}
	atomic.AddInt64(&b.free, int64(n))
	return false
}

func (b *byteBudget) give(n int) { atomic.AddInt64(&b.free, int64(n)) }

// answerBuffer holds the encoded messages of an answer back to back.
type answerBuffer struct {
	data []byte
	ends []int // end offset in data of each message
}

func (b *answerBuffer) add(enc []byte) {
	b.data = append(b.data, enc...)
	b.ends = append(b.ends, len(b.data))
}

// each calls fn with every buffered message, in order.
func (b *answerBuffer) each(fn func([]byte) error) error {
	start := 0
	for _, end := range b.ends {
		if err := fn(b.data[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// plan sizes the answer within the limits. A "from" or "range" answer
// is read in one walk of the history while its messages fit what is
// left of BufferBytes (shared by all answers being sent): its
// messages are kept until the walk knows how many there are and whether
// the limits cut the answer, which the status sent before them must say
// (reading the store is what answering costs, so a second walk would
// double it). The part of a larger answer that does not fit is only
// counted, and read again by send.
func (srv *resendServer) plan(q *streamr.ResendQuery) (resendPlan, error) {
	if q.Last > 0 {
		return srv.planLast(q)
	}
	var p resendPlan
	size, limit := 0, srv.cfg.MaxMessages
	if q.Limit > 0 {
		limit = min(limit, q.Limit)
	}
	var last streamr.MessageRef // of the last message buffered
	rank := 0                   // buffered messages with ref last
	err := srv.history.Messages(q.Part, q.From.Timestamp, q.To.Timestamp, func(enc []byte) error {
		id, err := storedID(enc)
		if err != nil || !q.Matches(&id) {
			return err
		}
		if p.count == limit || (p.count > 0 && size+len(enc) > srv.cfg.MaxBytes) {
			p.truncated = true
			return errStop
		}
		p.count++
		size += len(enc)
		switch ref := id.Ref(); {
		case p.rest.count > 0:
			p.rest.count++
		case srv.buffers.take(len(enc)):
			if len(p.buffered.ends) == 0 || ref != last {
				last, rank = ref, 0
			}
			rank++
			p.buffered.add(enc)
		default:
			p.rest = resendRest{from: ref, count: 1}
			if ref == last {
				p.rest.skip = rank
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		srv.buffers.give(len(p.buffered.data))
		return resendPlan{}, err
	}
	if p.rest.count > 0 {
		srv.m.rewalks.Inc()
	}
	return p, nil
}

// lastEntry is a candidate of a "last" answer.
type lastEntry struct {
	ref  streamr.MessageRef
	rank int // earlier matches with the same ref
	size int
}

// planLast keeps a ring of the newest matches, then drops the oldest
// while they exceed the byte limit.
func (srv *resendServer) planLast(q *streamr.ResendQuery) (resendPlan, error) {
	ring := make([]lastEntry, 0, min(q.Last, srv.cfg.MaxMessages, 1024))
	keep := min(q.Last, srv.cfg.MaxMessages)
	next, total := 0, 0
	var prev lastEntry
	err := srv.history.Messages(q.Part, 0, math.MaxInt64, func(enc []byte) error {
		id, err := storedID(enc)
		if err != nil || !q.Matches(&id) {
			return err
		}
		e := lastEntry{ref: id.Ref(), size: len(enc)}
		if total > 0 && e.ref == prev.ref {
			e.rank = prev.rank + 1
		}
		prev = e
		total++
		if len(ring) < keep {
			ring = append(ring, e)
			return nil
		}
		ring[next] = e
		next = (next + 1) % keep
		return nil
	})
	if err != nil || len(ring) == 0 {
		return resendPlan{}, err
	}
	ordered := slices.Concat(ring[next:], ring[:next])
	size := 0
	for _, e := range ordered {
		size += e.size
	}
	for len(ordered) > 1 && size > srv.cfg.MaxBytes {
		size -= ordered[0].size
		ordered = ordered[1:]
	}
	first := ordered[0]
	return resendPlan{
		count:     len(ordered),
		truncated: len(ordered) < min(q.Last, total),
		rest:      resendRest{from: first.ref, skip: first.rank, count: len(ordered)},
	}, nil
}

// send writes the OK status and the planned messages: the buffered ones,
// then the rest read again. The history may have changed since plan;
// send still stops at the plan's count and the limits.
func (srv *resendServer) send(s network.Stream, q *streamr.ResendQuery, p resendPlan) error {
	out, err := newAnswerWriter(s, srv.cfg.WriteTimeout, p.truncated)
	if err != nil {
		return err
	}
	size := 0
	err = p.buffered.each(func(enc []byte) error {
		size += len(enc)
		return srv.sendItem(out, enc)
	})
	if err == nil && p.rest.count > 0 {
		err = srv.sendRest(out, q, p.rest, size)
	}
	if err == nil {
		err = out.flush()
	}
	if err != nil {
		return fmt.Errorf("send messages of %s: %w", q.Part, err)
	}
	return nil
}

// sendRest reads the messages of r from the history and sends them,
// within the byte limit of which size is used already.
func (srv *resendServer) sendRest(out *answerWriter, q *streamr.ResendQuery, r resendRest, size int) error {
	to := int64(math.MaxInt64)
	if q.Last == 0 {
		to = q.To.Timestamp
	}
	sent, skipped := 0, 0
	err := srv.history.Messages(q.Part, r.from.Timestamp, to, func(enc []byte) error {
		id, err := storedID(enc)
		if err != nil || !q.Matches(&id) {
			return err
		}
		switch ref := id.Ref(); {
		case ref.Compare(r.from) < 0:
			return nil
		case ref == r.from && skipped < r.skip:
			skipped++
			return nil
		}
		if sent == r.count || (size > 0 && size+len(enc) > srv.cfg.MaxBytes) {
			return errStop
		}
		sent++
		size += len(enc)
		return srv.sendItem(out, enc)
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	return nil
}

func (srv *resendServer) sendItem(out *answerWriter, enc []byte) error {
	if err := out.item(enc); err != nil {
		return err
	}
	srv.m.messages.Inc()
	srv.m.bytes.Add(float64(len(enc)))
	return nil
}

// storedID reads the message ID of a stored message without decoding the
// rest.
func storedID(enc []byte) (streamr.MessageID, error) {
	id, _, err := streamr.UnmarshalHeader(enc)
	if err != nil {
		return id, fmt.Errorf("stored message: %w", err)
	}
	return id, nil
}
