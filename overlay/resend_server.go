package overlay

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/tributary-iot/tributary/streamr"
)

// History reads stored messages of a stream partition whose timestamps
// are within [from, to] (ms), in (timestamp, sequence number) order;
// encoded is valid only during the call. storage.Store satisfies it.
type History interface {
	Messages(part streamr.StreamPartID, from, to int64, fn func(encoded []byte) error) error
}

// requestTimeout bounds how long a client may take to send its request.
const requestTimeout = 10 * time.Second

// ServeResend answers ResendProtocol requests from h, within the node's
// ResendConfig limits. Call it once, at startup; a later call replaces h.
func (n *Node) ServeResend(h History) {
	srv := &resendServer{
		history: h,
		cfg:     n.cfg.Resend,
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
	srv.m.requests.WithLabelValues(status.String()).Inc()
}

// answer reads the request and writes the answer. It returns the status
// sent, or an error if the stream failed.
func (srv *resendServer) answer(s network.Stream, log *slog.Logger) (resendCode, error) {
	if err := s.SetReadDeadline(time.Now().Add(requestTimeout)); err != nil {
		return 0, fmt.Errorf("set request deadline: %w", err)
	}
	b, err := readControlFrame(s)
	if errors.Is(err, errControlFrameTooLarge) {
		return srv.refuse(s, resendStatus{code: codeBadRequest, message: err.Error()})
	}
	if err != nil {
		return 0, fmt.Errorf("read request: %w", err)
	}
	q, err := unmarshalRequest(b)
	if err != nil {
		return srv.refuse(s, resendStatus{code: codeBadRequest, message: err.Error()})
	}
	release, rule := srv.admit.admit(s.Conn().RemotePeer(), &q)
	if release == nil {
		srv.refused.refuse(rule, 1, "resend request refused: too busy", "peer", s.Conn().RemotePeer().String(), "stream_part", q.Part.String())
		return srv.refuse(s, resendStatus{code: codeTooBusy})
	}
	defer release()
	p, err := srv.plan(&q)
	if err != nil {
		log.Warn("resend failed reading the store", "stream_part", q.Part.String(), "err", err)
		return srv.refuse(s, resendStatus{code: codeUnavailable, message: err.Error()})
	}
	if p.count == 0 {
		return srv.refuse(s, resendStatus{code: codeNotStored})
	}
	if err := srv.send(s, &q, p); err != nil {
		return 0, err
	}
	log.Debug("resend answered", "stream_part", q.Part.String(), "messages", p.count, "truncated", p.truncated)
	return codeOK, nil
}

// refuse sends a status without messages.
func (srv *resendServer) refuse(s network.Stream, st resendStatus) (resendCode, error) {
	w := deadlineWriter{s: s, timeout: srv.cfg.WriteTimeout}
	if err := streamr.NewRawWriter(w).WriteFrame(st.marshal()); err != nil {
		return 0, fmt.Errorf("send status %s: %w", st.code, err)
	}
	return st.code, nil
}

// resendPlan is what an answer will hold, decided before its status is
// sent: messages from the first one at ref from (after skipping skip
// earlier matches with that same ref, of other chains), count of them.
type resendPlan struct {
	from      streamr.MessageRef
	skip      int
	count     int
	truncated bool
}

// plan walks the history once to size the answer within the limits.
func (srv *resendServer) plan(q *streamr.ResendQuery) (resendPlan, error) {
	if q.Last > 0 {
		return srv.planLast(q)
	}
	p := resendPlan{from: q.From}
	size, limit := 0, srv.cfg.MaxMessages
	if q.Limit > 0 {
		limit = min(limit, q.Limit)
	}
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
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return resendPlan{}, err
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
	return resendPlan{from: first.ref, skip: first.rank, count: len(ordered), truncated: len(ordered) < min(q.Last, total)}, nil
}

// send writes the OK status and the planned messages. The history may
// have changed since plan; send still stops at its count and the limits.
func (srv *resendServer) send(s network.Stream, q *streamr.ResendQuery, p resendPlan) error {
	bw := bufio.NewWriterSize(deadlineWriter{s: s, timeout: srv.cfg.WriteTimeout}, 32<<10)
	out := streamr.NewRawWriter(bw)
	if err := out.WriteFrame(resendStatus{code: codeOK, truncated: p.truncated}.marshal()); err != nil {
		return fmt.Errorf("send status: %w", err)
	}
	to := int64(math.MaxInt64)
	if q.Last == 0 {
		to = q.To.Timestamp
	}
	sent, size, skipped := 0, 0, 0
	err := srv.history.Messages(q.Part, p.from.Timestamp, to, func(enc []byte) error {
		id, err := storedID(enc)
		if err != nil || !q.Matches(&id) {
			return err
		}
		switch ref := id.Ref(); {
		case ref.Compare(p.from) < 0:
			return nil
		case ref == p.from && skipped < p.skip:
			skipped++
			return nil
		}
		if sent == p.count || (sent > 0 && size+len(enc) > srv.cfg.MaxBytes) {
			return errStop
		}
		if err := out.WriteFrame(enc); err != nil {
			return err
		}
		sent++
		size += len(enc)
		srv.m.messages.Inc()
		srv.m.bytes.Add(float64(len(enc)))
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("send messages of %s: %w", q.Part, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("send messages of %s: %w", q.Part, err)
	}
	return nil
}

// storedID reads the message ID of a stored message without decoding the
// rest.
func storedID(enc []byte) (streamr.MessageID, error) {
	id, _, err := scanIDAndSignature(enc)
	if err != nil {
		return id, fmt.Errorf("stored message: %w", err)
	}
	return id, nil
}

// deadlineWriter renews the stream's write deadline before each write, so
// a client that stops reading (its flow-control window fills) frees the
// server after timeout, while a slow but steady one is served.
type deadlineWriter struct {
	s       network.Stream
	timeout time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	if err := w.s.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	return w.s.Write(b)
}
