package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// ResendProtocol is the libp2p protocol with which a subscriber fetches
// stored messages of a stream partition it missed, from the publishing
// gateway or any node that stores the stream. It carries the Streamr
// storage node's resend queries (last / from / range, with optional
// publisher and chain filters) and answers in the storage node's raw
// format, so an answer is byte for byte the export of the same range.
//
// One request per stream. All frames are [uint32 big-endian length][body].
//
//  1. The client sends one frame of at most 4 KiB holding a ResendRequest
//     and closes its write side:
//
//     message ResendRequest {
//     string stream_id = 1;             // e.g. "0xabc…/sensors"
//     int32  partition = 2;
//     Kind   kind = 3;                  // LAST = 1, FROM = 2, RANGE = 3
//     int32  last = 4;                  // LAST: the newest N messages
//     int64  from_timestamp = 5;        // FROM, RANGE: inclusive lower bound
//     int32  from_sequence_number = 6;
//     int64  to_timestamp = 7;          // RANGE: inclusive upper bound
//     int32  to_sequence_number = 8;
//     bytes  publisher_id = 9;          // optional filter
//     string msg_chain_id = 10;         // optional filter
//     int32  max_messages = 11;         // optional: at most this many (a page)
//     }
//
//  2. The server answers with one frame of at most 4 KiB holding
//
//     message ResendStatus {
//     Code   code = 1;      // OK = 1, NOT_STORED = 2, BAD_REQUEST = 3, TOO_BUSY = 4, UNAVAILABLE = 5
//     string message = 2;   // why, for BAD_REQUEST and UNAVAILABLE
//     bool   truncated = 3; // OK: the server's limits cut the answer; ask again after the last message
//     }
//
//  3. After OK (which carries at least one message; none matching is
//     NOT_STORED) come the matching messages in storage order (timestamp,
//     sequence number, publisher, chain), each as one frame holding the
//     StreamMessage protobuf exactly as stored, then the server closes the
//     stream (EOF). A reset instead of EOF means the answer is incomplete.
//
// The request is protobuf (encoded with protowire, like the Streamr
// message ID scan in this package) rather than JSON: publisher IDs travel
// as bytes instead of hex, 64-bit timestamps stay exact for any client
// language, decoding needs no reflection, and the messages that follow
// are protobuf anyway.
const ResendProtocol = "/tributary/resend/1.0.0"

// Defaults for zero ResendConfig fields.
const (
	DefaultResendMaxMessages  = 10_000
	DefaultResendMaxBytes     = 16 << 20
	DefaultResendMaxStreams   = 16
	DefaultResendWriteTimeout = 10 * time.Second
	DefaultResendPeerTimeout  = 3 * time.Second
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
	WriteTimeout    time.Duration // server: a write making no progress this long aborts the answer; default 10 s
	PeerTimeout     time.Duration // client (Resend): how long each peer may take to start answering, and then to send each message; default 3 s
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
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultResendWriteTimeout
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = DefaultResendPeerTimeout
	}
}

func (c *ResendConfig) validate() error {
	if c.MaxMessages < 0 || c.MaxBytes < 0 || c.MaxStreams < 0 || c.WriteTimeout < 0 || c.PeerTimeout < 0 {
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
	errs := make([]error, 0, len(peers))
	for _, p := range peers {
		if err := ctx.Err(); err != nil {
			return ResendResult{}, fmt.Errorf("resend %s after asking %d peers: %w", q.Part, len(errs), err)
		}
		res, err := n.askResend(ctx, p, q, req)
		if err == nil {
			return res, nil
		}
		n.log.Debug("resend peer did not answer", "stream_part", q.Part.String(), "peer", p.String(), "err", err)
		errs = append(errs, err)
	}
	return ResendResult{}, fmt.Errorf("resend %s: none of %d peers answered: %w", q.Part, len(peers), errors.Join(errs...))
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
	octx, cancel := context.WithTimeout(ctx, n.cfg.Resend.PeerTimeout)
	s, err := n.host.NewStream(octx, p, ResendProtocol)
	cancel()
	if err != nil {
		return ResendResult{}, fmt.Errorf("resend %s from %s: open stream: %w", q.Part, p, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() }) // unblocks reads when ctx ends
	defer stop()
	res, err := n.exchange(s, q, req)
	if err != nil {
		s.Reset()
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(err, ctxErr)
		}
		return ResendResult{}, fmt.Errorf("resend %s from %s: %w", q.Part, p, err)
	}
	if res.cut {
		s.Reset() // the rest of the answer is not wanted
	} else {
		s.Close()
	}
	return res.ResendResult, nil
}

// answer is a ResendResult and whether the reader stopped at q.Limit.
type answer struct {
	ResendResult
	cut bool
}

// progressReader gives every read of a stream PeerTimeout.
type progressReader struct {
	s       network.Stream
	timeout time.Duration
}

func (r progressReader) Read(b []byte) (int, error) {
	if err := r.s.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
		return 0, err
	}
	return r.s.Read(b)
}

func (n *Node) exchange(s network.Stream, q streamr.ResendQuery, req []byte) (answer, error) {
	if err := streamr.NewRawWriter(s).WriteFrame(req); err != nil {
		return answer{}, fmt.Errorf("send request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return answer{}, fmt.Errorf("send request: %w", err)
	}
	r := progressReader{s: s, timeout: n.cfg.Resend.PeerTimeout}
	b, err := readControlFrame(r)
	if err != nil {
		return answer{}, fmt.Errorf("read status: %w", err)
	}
	st, err := unmarshalStatus(b)
	if err != nil {
		return answer{}, err
	}
	if err := st.err(); err != nil {
		return answer{}, err
	}
	msgs, cut, err := n.readResend(r, s.Conn().RemotePeer(), q)
	if err != nil {
		return answer{}, err
	}
	if len(msgs) == 0 {
		return answer{}, fmt.Errorf("%w: status ok without messages", ErrNotStored)
	}
	return answer{ResendResult: ResendResult{Peer: s.Conn().RemotePeer().String(), Messages: msgs, Truncated: st.truncated || cut}, cut: cut}, nil
}

// err maps a status other than OK to its error.
func (s resendStatus) err() error {
	switch s.code {
	case codeOK:
		return nil
	case codeNotStored:
		return ErrNotStored
	case codeTooBusy:
		return ErrTooBusy
	case codeBadRequest:
		return fmt.Errorf("%w: %s", ErrBadRequest, s.message)
	case codeUnavailable:
		return fmt.Errorf("%w: %s", ErrResendFailed, s.message)
	}
	return fmt.Errorf("%w %s", errUnknownOutcome, s.code)
}

// readResend reads and validates the messages of an OK answer. Any
// invalid message, or more than the limits allow, fails the whole answer;
// a message that fails validation also penalises the peer.
func (n *Node) readResend(s io.Reader, from peer.ID, q streamr.ResendQuery) ([]Delivery, bool, error) {
	v := n.validatorFor(q.Part)
	limit := n.cfg.Resend.MaxMessages
	if q.Last > 0 {
		limit = min(limit, q.Last)
	}
	rr := streamr.NewRawReader(s, n.cfg.Limits.MaxMessageBytes)
	var out []Delivery
	var prev streamr.MessageRef
	total := 0
	for {
		frames, eof, err := readFrames(rr, validateChunk, q.Limit-len(out), q.Limit > 0)
		if errors.Is(err, streamr.ErrFrameTooLarge) {
			n.penaliseResend(from, q.Part, err)
			return nil, false, fmt.Errorf("%w: %w", ErrInvalidResend, err)
		}
		if err != nil {
			return nil, false, fmt.Errorf("read message %d: %w", len(out)+len(frames)+1, err)
		}
		for i, c := range checkParallel(v, frames) {
			if c.verdict == reject {
				n.penaliseResend(from, q.Part, c.err)
			}
			if c.err != nil {
				return nil, false, fmt.Errorf("%w: message %d: %w", ErrInvalidResend, len(out)+1, c.err)
			}
			total += len(frames[i])
			if err := checkAnswer(&q, c.m, prev, len(out)+1, limit, total, n.cfg.Resend.MaxBytes); err != nil {
				n.penaliseResend(from, q.Part, err)
				return nil, false, err
			}
			prev = c.m.ID.Ref()
			out = append(out, Delivery{Envelope: streamr.Envelope{Msg: c.m, Encoded: frames[i]}, From: from.String()})
		}
		switch {
		case eof:
			return out, false, nil
		case q.Limit > 0 && len(out) == q.Limit:
			return out, true, nil
		}
	}
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

// checkParallel validates frames on up to GOMAXPROCS goroutines.
func checkParallel(v *validator, frames [][]byte) []checked {
	out := make([]checked, len(frames))
	workers := min(runtime.GOMAXPROCS(0), len(frames))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(frames); i += workers {
				m, verdict, _, err := v.check(frames[i])
				out[i] = checked{m: m, verdict: verdict, err: err}
			}
		})
	}
	wg.Wait()
	return out
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
	}
}

func (m *resendMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.messages, m.bytes}
}
