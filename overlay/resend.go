package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// ResendProtocol is the libp2p protocol with which a subscriber fetches
// stored messages of a stream partition it missed, from the publishing
// gateway or any node that stores the stream. It carries the Streamr
// storage node's resend queries (last / from / range, with optional
// publisher and chain filters) and answers in the storage node's raw
// format, so an answer is byte for byte the export of the same range.
//
// One request per stream, in the request/response exchange that
// ReceiptProtocol shares (see exchange.go); the messages are protobuf,
// defined in streamr/pb/tributary.proto:
//
//  1. The client sends one frame of at most 4 KiB holding a ResendRequest
//     (stream, partition, kind LAST / FROM / RANGE with its count or
//     bounds, optional publisher and chain filters, optional max_messages
//     page size) and closes its write side.
//  2. The server answers with one frame of at most 4 KiB holding a Status:
//     OK, NOT_STORED, BAD_REQUEST (with a reason), TOO_BUSY or UNAVAILABLE;
//     truncated says the server's limits cut the answer (ask again after
//     the last message).
//  3. After OK (which carries at least one message; none matching is
//     NOT_STORED) come the matching messages in storage order (timestamp,
//     sequence number, publisher, chain), each as one frame holding the
//     StreamMessage protobuf exactly as stored, then the server closes the
//     stream (EOF). A reset instead of EOF means the answer is incomplete.
//
// The request is protobuf rather than JSON: publisher IDs travel as bytes
// instead of hex, 64-bit timestamps stay exact for any client language,
// and the messages that follow are protobuf anyway. The field numbers are
// those of the first, hand-encoded version of the protocol, so its
// requests still decode.
const ResendProtocol = "/tributary/resend/1.0.0"

// Defaults for zero ResendConfig fields.
const (
	DefaultResendMaxMessages  = 10_000
	DefaultResendMaxBytes     = 16 << 20
	DefaultResendMaxStreams   = 16
	DefaultResendWriteTimeout = 10 * time.Second
	DefaultResendPeerTimeout  = 3 * time.Second
	DefaultResendBufferBytes  = 4 << 20
)

// resendPenalty is how long a peer that answered with an invalid message
// is skipped by Resend (pubsub keeps a bad score as long).
const resendPenalty = 10 * time.Minute

// Peerstore and connection manager keys marking a penalised peer.
const (
	penaltyKey   = "tributary/resend-invalid"
	penaltyTag   = "tributary-resend-invalid"
	penaltyValue = -100 // trimmed first when the connection manager is over its limit
)

// ResendConfig bounds resend answers, both those this node serves and
// those it accepts.
type ResendConfig struct {
	MaxMessages int // messages per answer; default 10,000
	MaxBytes    int // encoded message bytes per answer; default 16 MiB
	MaxStreams  int // answers served at once, beyond which requests get TOO_BUSY; default 16
	// MaxStreamsPerPeer bounds one peer's answers in progress; default
	// MaxStreams/4 (at least 1): the Orderer keeps up to 4 gap fills in
	// flight per partition.
	MaxStreamsPerPeer int
	// ReservedStreams of MaxStreams serve only gap fills (one publisher's
	// chain) of partitions this node publishes on, so readers of stored
	// streams cannot starve the recovery of our own readings; default
	// MaxStreams/4.
	ReservedStreams int
	// BufferBytes of the answers being sent, all together, are read from
	// the store once and held until the status is sent; the rest of an
	// answer that finds the buffer full is read twice (counted, then
	// sent; tributary_overlay_resend_rewalks_total). Default 4 MiB: four
	// gap-fill pages of 2,000 sensor readings, what one peer may ask for
	// at once (MaxStreamsPerPeer).
	BufferBytes int
	// VerifyWorkers verify the signatures of resend answers, shared by
	// every answer this node reads (a catch-up is limited by signature
	// verification); default GOMAXPROCS.
	VerifyWorkers int
	WriteTimeout  time.Duration // server: a write making no progress this long aborts the answer; default 10 s
	PeerTimeout   time.Duration // client (Resend): how long each peer may take to start answering, and then to send each message; default 3 s
}

func (c *ResendConfig) setDefaults() {
	if c.MaxMessages == 0 {
		c.MaxMessages = DefaultResendMaxMessages
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultResendMaxBytes
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultResendMaxStreams
	}
	if c.MaxStreamsPerPeer == 0 {
		c.MaxStreamsPerPeer = max(1, c.MaxStreams/4)
	}
	if c.ReservedStreams == 0 {
		c.ReservedStreams = c.MaxStreams / 4
	}
	if c.BufferBytes == 0 {
		c.BufferBytes = DefaultResendBufferBytes
	}
	if c.VerifyWorkers == 0 {
		c.VerifyWorkers = runtime.GOMAXPROCS(0)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultResendWriteTimeout
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = DefaultResendPeerTimeout
	}
}

func (c *ResendConfig) validate() error {
	if c.MaxMessages < 0 || c.MaxBytes < 0 || c.MaxStreams < 0 || c.WriteTimeout < 0 || c.PeerTimeout < 0 || c.BufferBytes < 0 || c.VerifyWorkers < 0 {
		return errors.New("overlay config: negative resend limit")
	}
	if c.ReservedStreams < 0 || c.ReservedStreams >= c.MaxStreams || c.MaxStreamsPerPeer < 0 {
		return fmt.Errorf("overlay config: resend_reserved_streams %d must be 0 to resend_max_streams-1 (%d), resend_max_streams_per_peer %d at least 0",
			c.ReservedStreams, c.MaxStreams-1, c.MaxStreamsPerPeer)
	}
	return nil
}

// Errors of a resend answer. A peer's failure never ends Resend: it asks
// the next peer.
var (
	ErrNotStored      = errors.New("no matching messages stored")
	ErrTooBusy        = errors.New("peer too busy to answer resend requests")
	ErrBadRequest     = errors.New("resend request refused as malformed")
	ErrResendFailed   = errors.New("peer failed to read its store")
	ErrInvalidResend  = errors.New("invalid resend answer")
	errUnknownOutcome = errors.New("unknown resend status")
)

// ResendResult is one peer's answer to a resend query.
type ResendResult struct {
	Peer     string     // the peer that answered
	Messages []Delivery // validated, in storage order; Encoded is the bytes as stored
	// Truncated says the peer's limits cut the answer short: ask again
	// from after the last message for the rest.
	Truncated bool
}

// Resend fetches stored messages matching q from the overlay. It asks one
// peer at a time, first the members of q.Part's overlay (whether or not
// this node joined it), then the other connected peers, each for at most
// ResendConfig.PeerTimeout, until one answers with at least one message.
// Each message is validated like one arriving over gossip; a peer that
// sends an invalid one has its whole answer discarded and is skipped for
// 10 minutes. The envelopes hold the messages' bytes as stored. Resend
// implements bridge.Resender.
func (n *Node) Resend(ctx context.Context, q streamr.ResendQuery) ([]streamr.Envelope, error) {
	res, err := n.resend(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]streamr.Envelope, len(res.Messages))
	for i, d := range res.Messages {
		out[i] = d.Envelope
	}
	return out, nil
}

// ResendFrom asks one peer (a peer ID, as from Node.ID) for the messages
// matching q, dialling it if necessary, within ctx. A peer that has none
// answers with an error wrapping ErrNotStored.
func (n *Node) ResendFrom(ctx context.Context, peerID string, q streamr.ResendQuery) (ResendResult, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return ResendResult{}, fmt.Errorf("resend from %q: %w", peerID, err)
	}
	req, err := marshalRequest(q)
	if err != nil {
		return ResendResult{}, err
	}
	return n.askResend(ctx, id, q, req)
}

func (n *Node) resend(ctx context.Context, q streamr.ResendQuery) (ResendResult, error) {
	req, err := marshalRequest(q)
	if err != nil {
		return ResendResult{}, err
	}
	peers := n.resendCandidates(q.Part)
	if len(peers) == 0 {
		return ResendResult{}, fmt.Errorf("resend %s: %w", q.Part, streamr.ErrNoPeers)
	}
	asked := len(peers)
	for round, pause := 0, busyPause; ; round, pause = round+1, 2*pause {
		res, busy, errs := n.askPeers(ctx, peers, q, req)
		if errs == nil {
			return res, nil
		}
		if len(busy) == 0 || round == busyRounds || !sleepCtx(ctx, jitter(pause)) {
			return ResendResult{}, fmt.Errorf("resend %s: none of %d peers answered: %w", q.Part, asked, errors.Join(errs...))
		}
		n.metrics.resend.busyRetries.Inc()
		peers = busy // every other peer failed for good
	}
}

// A peer that answers TOO_BUSY has all its answer slots taken, for as
// long as an answer takes to read (a page: well under a second). When
// every peer that might answer is busy, Resend asks them again after a
// pause, doubled each round (50 ms to 1.6 s, about 3 s in all: less than
// resend_retry, the Orderer's deadline), rather than leave the gap to
// the caller's next attempt seconds later.
const (
	busyPause  = 50 * time.Millisecond
	busyRounds = 6
)

// askPeers asks each of peers in turn until one answers. It returns the
// answer, or the peers that were too busy and every peer's error.
func (n *Node) askPeers(ctx context.Context, peers []peer.ID, q streamr.ResendQuery, req []byte) (ResendResult, []peer.ID, []error) {
	errs := make([]error, 0, len(peers))
	var busy []peer.ID
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return ResendResult{}, nil, append(errs, err)
		}
		res, err := n.askResend(ctx, p, q, req)
		if err == nil {
			return res, nil, nil
		}
		n.log.Debug("resend peer did not answer", "stream_part", q.Part.String(), "peer", p.String(), "err", err)
		errs = append(errs, err)
		if errors.Is(err, ErrTooBusy) {
			busy = append(busy, p)
		}
	}
	return ResendResult{}, busy, errs
}

// jitter spreads d over [d/2, 3d/2), so that requests refused together
// are not all asked again together.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}

// sleepCtx waits for d, or less if ctx ends first; it reports whether
// the whole pause passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// resendCandidates lists the peers to ask: the partition's overlay
// members first, then the other connected peers, leaving out penalised
// ones.
func (n *Node) resendCandidates(part streamr.StreamPartID) []peer.ID {
	members := n.ps.ListPeers(topicName(part))
	out := make([]peer.ID, 0, len(members))
	seen := make(map[peer.ID]bool, len(members))
	for _, p := range members {
		seen[p] = true
		if !n.resendPenalised(p) {
			out = append(out, p)
		}
	}
	for _, p := range n.host.Network().Peers() {
		if !seen[p] && !n.resendPenalised(p) {
			out = append(out, p)
		}
	}
	return out
}

// askResend runs one request on a new stream to p. The peer has
// PeerTimeout to open the stream and answer with a status, and then to
// send each further message: a long answer read by a slow receiver takes
// as long as it needs, while a stalled peer is given up quickly.
func (n *Node) askResend(ctx context.Context, p peer.ID, q streamr.ResendQuery, req []byte) (ResendResult, error) {
	timeout := n.cfg.Resend.PeerTimeout
	release, err := n.takeAskSlot(ctx, p, timeout)
	if err != nil {
		return ResendResult{}, fmt.Errorf("resend %s from %s: %w", q.Part, p, err)
	}
	defer release()
	c, err := n.ask(ctx, p, ResendProtocol, req, timeout, timeout)
	if err != nil {
		return ResendResult{}, fmt.Errorf("resend %s from %s: %w", q.Part, p, err)
	}
	res, err := n.readAnswer(c, p, q)
	switch {
	case err != nil:
		c.done(err)
		return ResendResult{}, fmt.Errorf("resend %s from %s: %w", q.Part, p, withCtxErr(ctx, err))
	case res.cut:
		c.done(errCut) // the rest of the answer is not wanted
	default:
		c.done(nil)
	}
	return res.ResendResult, nil
}

// takeAskSlot waits for one of our request slots to p, as long as p
// would have to start answering (timeout): our slots to a peer that
// keeps its answers slow count as that peer being busy, and Resend asks
// the next one.
func (n *Node) takeAskSlot(ctx context.Context, p peer.ID, timeout time.Duration) (func(), error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	release, err := n.asks.take(wctx, p)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: our %d requests to it still open after %s", ErrTooBusy, n.cfg.Resend.MaxStreamsPerPeer, timeout)
	}
	return release, err
}

// errCut ends a call whose answer was read only up to the query's Limit.
var errCut = errors.New("answer read up to the query's limit")

// answer is a ResendResult and whether the reader stopped at q.Limit.
type answer struct {
	ResendResult
	cut bool
}

func (n *Node) readAnswer(c *call, p peer.ID, q streamr.ResendQuery) (answer, error) {
	if err := resendStatusErr(c.status); err != nil {
		return answer{}, err
	}
	msgs, cut, err := n.readResend(c.r, p, q)
	if err != nil {
		return answer{}, err
	}
	if len(msgs) == 0 {
		return answer{}, fmt.Errorf("%w: status ok without messages", ErrNotStored)
	}
	return answer{ResendResult: ResendResult{Peer: p.String(), Messages: msgs, Truncated: c.status.GetTruncated() || cut}, cut: cut}, nil
}

// resendStatusErr maps a status other than OK to its error.
func resendStatusErr(st *pb.Status) error {
	switch st.GetCode() {
	case pb.Status_OK:
		return nil
	case pb.Status_NOT_STORED:
		return ErrNotStored
	case pb.Status_TOO_BUSY:
		return ErrTooBusy
	case pb.Status_BAD_REQUEST:
		return fmt.Errorf("%w: %s", ErrBadRequest, st.GetMessage())
	case pb.Status_UNAVAILABLE:
		return fmt.Errorf("%w: %s", ErrResendFailed, st.GetMessage())
	}
	return fmt.Errorf("%w %s", errUnknownOutcome, codeLabel(st.GetCode()))
}

// readResend reads and validates the messages of an OK answer. Any
// invalid message, or more than the limits allow, fails the whole answer;
// a message that fails validation also penalises the peer. The answer is
// read in chunks of frames validated on the node's verify workers, up to
// verifyAhead chunks at once while the next one is read: the answer
// streams in while the cores verify signatures, and a reader whose
// chunks wait for the workers stops reading, which holds the sender back.
func (n *Node) readResend(s io.Reader, from peer.ID, q streamr.ResendQuery) ([]Delivery, bool, error) {
	a := &answerReader{n: n, v: n.validatorFor(q.Part), from: from, fromID: from.String(), q: q, limit: n.cfg.Resend.MaxMessages}
	if q.Last > 0 {
		a.limit = min(a.limit, q.Last)
	}
	if q.Limit > 0 {
		a.out = make([]Delivery, 0, min(a.limit, q.Limit)) // a page asked for is usually full
	}
	rr := streamr.NewRawReader(s, n.cfg.Limits.MaxMessageBytes)
	var pending []pendingChunk // being validated, oldest first
	read := 0
	for {
		frames, eof, err := readFrames(rr, validateChunk, q.Limit-read, q.Limit > 0)
		read += len(frames)
		if len(frames) > 0 {
			pending = append(pending, pendingChunk{frames: frames, checks: n.verify.checkAsync(a.v, frames)})
		}
		done := err != nil || eof || (q.Limit > 0 && read == q.Limit)
		for len(pending) > 0 && (done || len(pending) > verifyAhead) {
			if aerr := a.accept(pending[0].frames, <-pending[0].checks); aerr != nil {
				drainChecks(pending[1:])
				return nil, false, aerr
			}
			pending = pending[1:]
		}
		switch {
		case errors.Is(err, streamr.ErrFrameTooLarge):
			n.penaliseResend(from, q.Part, err)
			return nil, false, fmt.Errorf("%w: %w", ErrInvalidResend, err)
		case err != nil && len(a.out) > 0:
			// Cut short (the caller's deadline, the progress timeout, a
			// reset) after messages that were validated: they are kept as a
			// truncated answer, so a receiver that cannot verify a whole page
			// within its deadline still advances, part of a page at a time,
			// instead of asking for the same page again and again.
			return a.out, true, nil
		case err != nil:
			return nil, false, fmt.Errorf("read message %d: %w", read+1, err)
		case done:
			return a.out, !eof, nil
		}
	}
}

// verifyAhead is how many chunks of one answer may be validated at once:
// two keep the workers busy while the reader hands a finished chunk on.
const verifyAhead = 2

// pendingChunk is a chunk of an answer and its validation in progress.
type pendingChunk struct {
	frames [][]byte
	checks <-chan []checked
}

// drainChecks waits for the validations of chunks not wanted any more,
// so that none outlives the answer.
func drainChecks(chunks []pendingChunk) {
	for _, c := range chunks {
		<-c.checks
	}
}

// answerReader collects the validated messages of one resend answer.
type answerReader struct {
	n      *Node
	v      *validator
	from   peer.ID
	fromID string // from.String(), encoded once per answer rather than per message
	q      streamr.ResendQuery
	limit  int // most messages the answer may hold
	out    []Delivery
	prev   streamr.MessageRef
	total  int // bytes
}

// accept appends a validated chunk of the answer, in order, or fails the
// answer at its first message that is invalid or not one the query asked
// for.
func (a *answerReader) accept(frames [][]byte, checks []checked) error {
	for i, c := range checks {
		if c.verdict == reject {
			a.n.penaliseResend(a.from, a.q.Part, c.err)
		}
		if c.err != nil {
			return fmt.Errorf("%w: message %d: %w", ErrInvalidResend, len(a.out)+1, c.err)
		}
		a.total += len(frames[i])
		if err := checkAnswer(&a.q, c.m, a.prev, len(a.out)+1, a.limit, a.total, a.n.cfg.Resend.MaxBytes); err != nil {
			a.n.penaliseResend(a.from, a.q.Part, err)
			return err
		}
		a.prev = c.m.ID.Ref()
		a.out = append(a.out, Delivery{Envelope: streamr.Envelope{Msg: c.m, Encoded: frames[i]}, From: a.fromID})
	}
	return nil
}

// validateChunk is how many frames of a resend answer are read before
// they are validated together, on every core: a receiver catching up on
// a backlog is limited by signature verification.
const validateChunk = 256

// readFrames reads up to chunk frames (and at most left, if bounded). eof
// reports that the answer ended.
func readFrames(rr *streamr.RawReader, chunk, left int, bounded bool) (frames [][]byte, eof bool, err error) {
	if bounded {
		chunk = min(chunk, left)
	}
	for len(frames) < chunk {
		frame, err := rr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return frames, true, nil
		}
		if err != nil {
			return frames, false, err
		}
		frames = append(frames, frame)
	}
	return frames, false, nil
}

type checked struct {
	m       *streamr.StreamMessage
	verdict verdict
	err     error
}

// checkAnswer checks that the nth message of an answer is one the query
// asked for, in order and within the limits.
func checkAnswer(q *streamr.ResendQuery, m *streamr.StreamMessage, prev streamr.MessageRef, nth, maxMsgs, total, maxBytes int) error {
	ref := m.ID.Ref()
	switch {
	case !q.Matches(&m.ID):
		return fmt.Errorf("%w: message %d (%s, chain %q) does not match the query", ErrInvalidResend, nth, ref, m.ID.MsgChainID)
	case ref.Compare(prev) < 0:
		return fmt.Errorf("%w: message %d (%s) is out of order after %s", ErrInvalidResend, nth, ref, prev)
	case nth > maxMsgs:
		return fmt.Errorf("%w: more than %d messages", ErrInvalidResend, maxMsgs)
	case total > maxBytes:
		return fmt.Errorf("%w: more than %d bytes", ErrInvalidResend, maxBytes)
	}
	return nil
}

// validatorFor returns the gossip validator of part, usable whether or
// not this node joined it.
func (n *Node) validatorFor(part streamr.StreamPartID) *validator {
	return &validator{part: part, limits: n.cfg.Limits, maxSkew: n.cfg.MaxClockSkew, policy: n.cfg.Policy, now: n.now}
}

// penaliseResend makes Resend skip p for resendPenalty and the connection
// manager trim it first. Resend answers are not gossip, so the GossipSub
// score cannot see them.
func (n *Node) penaliseResend(p peer.ID, part streamr.StreamPartID, cause error) {
	if err := n.host.Peerstore().Put(p, penaltyKey, n.now()); err != nil {
		n.log.Warn("cannot record resend penalty", "peer", p.String(), "err", err)
	}
	n.host.ConnManager().TagPeer(p, penaltyTag, penaltyValue)
	n.log.Warn("peer sent an invalid resend answer: skipping it for resends", "peer", p.String(),
		"stream_part", part.String(), "for", resendPenalty, "err", cause)
}

// resendPenalised reports whether p is within its resend penalty, and
// lifts the connection manager tag of an expired one.
func (n *Node) resendPenalised(p peer.ID) bool {
	v, err := n.host.Peerstore().Get(p, penaltyKey)
	if err != nil {
		return false
	}
	if at, ok := v.(time.Time); ok && n.now().Sub(at) < resendPenalty {
		return true
	}
	n.host.ConnManager().UntagPeer(p, penaltyTag)
	return false
}

// resendMetrics count the resend answers this node serves.
type resendMetrics struct {
	requests *prometheus.CounterVec // by status
	messages prometheus.Counter
	bytes    prometheus.Counter
	rewalks  prometheus.Counter
	// verifyWaits counts batches that found every verify worker busy.
	verifyWaits prometheus.Counter
	// busyRetries counts Resend's pauses with every peer busy (client).
	busyRetries prometheus.Counter
}

// statusAborted labels answers cut off by a write error or timeout.
const statusAborted = "aborted"

func newResendMetrics() *resendMetrics {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "tributary", Subsystem: "overlay", Name: name, Help: help}
	}
	return &resendMetrics{
		requests: prometheus.NewCounterVec(opts("resend_requests_total",
			"Resend requests served, by answer status (aborted: the write failed or timed out)."), []string{"status"}),
		messages: prometheus.NewCounter(opts("resend_messages_total", "Messages sent in resend answers.")),
		bytes:    prometheus.NewCounter(opts("resend_bytes_total", "Encoded message bytes sent in resend answers.")),
		rewalks: prometheus.NewCounter(opts("resend_rewalks_total",
			"Resend answers larger than resend_buffer_bytes, whose rest was read from the store a second time.")),
		verifyWaits: prometheus.NewCounter(opts("resend_verify_waits_total",
			"Batches of resend answers that waited for a verify worker (all resend_verify_workers busy).")),
		busyRetries: prometheus.NewCounter(opts("resend_busy_retries_total",
			"Resend requests of this node asked again after a pause because every peer that could answer was too busy.")),
	}
}

func (m *resendMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.messages, m.bytes, m.rewalks, m.verifyWaits, m.busyRetries}
}
