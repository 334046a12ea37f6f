package overlay

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/streamr"
)

// ReceiptProtocol is the libp2p protocol with which a publishing gateway
// asks a node how far it holds the publisher's message chains in one
// stream partition (delivery receipts). The answer is the node's own
// claim; the Noise handshake authenticates which peer made it.
//
// One query per stream. All frames are [uint32 big-endian length][body] of
// at most 4 KiB, protobuf encoded like ResendProtocol's.
//
//  1. The client sends one frame holding a ReceiptRequest and closes its
//     write side:
//
//     message ReceiptRequest {
//     string stream_id = 1;    // e.g. "0xabc…/sensors"
//     int32  partition = 2;
//     bytes  publisher_id = 3; // required
//     }
//
//  2. The server answers with one frame holding a ResendStatus (see
//     ResendProtocol): OK, BAD_REQUEST (with a reason), TOO_BUSY or
//     UNAVAILABLE; truncated says more than MaxReceipts chains were held.
//
//  3. After OK come up to MaxReceipts frames, one per chain the node holds
//     messages of, in increasing chain ID order (none if it holds
//     nothing), then the server closes the stream (EOF):
//
//     message ChainReceipt {
//     string msg_chain_id = 1;
//     int64  timestamp = 2;        // the last message held: every one of
//     int32  sequence_number = 3;  // the chain up to it is held
//     }
const ReceiptProtocol = "/tributary/receipt/1.0.0"

// MaxReceipts bounds the chains of one answer. A publisher has one chain
// per MQTT client, so a real answer holds a few dozen.
const MaxReceipts = 10_000

// receiptMaxStreams bounds the queries served at once; more get TOO_BUSY.
const receiptMaxStreams = 8

// ReceiptSource reports how far this node holds each chain of publisher in
// part. storage.Store satisfies it.
type ReceiptSource interface {
	Receipts(part streamr.StreamPartID, publisher []byte) ([]streamr.ChainReceipt, error)
}

// Errors of a receipt query.
var (
	ErrReceiptsBusy        = errors.New("peer too busy to answer receipt queries")
	ErrReceiptsRefused     = errors.New("receipt query refused as malformed")
	ErrReceiptsUnavailable = errors.New("peer failed to read its receipts")
	ErrInvalidReceipts     = errors.New("invalid receipt answer")
)

// Field numbers of ReceiptRequest and streamr.ChainReceipt.
const (
	rreqStreamID    = 1
	rreqPartition   = 2
	rreqPublisherID = 3

	receiptChainID   = 1
	receiptTimestamp = 2
	receiptSeqNo     = 3
)

// PartitionPeers returns the peer IDs of the members of part's overlay
// that this node knows of, sorted; none if this node has not joined it.
func (n *Node) PartitionPeers(part streamr.StreamPartID) []string {
	topic := topicName(part)
	if n.lookupPartition(topic) == nil {
		return nil
	}
	ids := n.ps.ListPeers(topic)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	slices.Sort(out)
	return out
}

// QueryReceipts asks one peer (a peer ID, as from Node.ID or
// PartitionPeers) how far it holds publisher's chains in part, dialling it
// if necessary. ctx bounds the whole query: give it a timeout. A peer that
// holds nothing answers with no receipts and a nil error. If the peer
// holds more than MaxReceipts chains, the first MaxReceipts by chain ID
// are returned (and a warning logged): the others count as not held.
func (n *Node) QueryReceipts(ctx context.Context, peerID string, part streamr.StreamPartID, publisher []byte) ([]streamr.ChainReceipt, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return nil, fmt.Errorf("query receipts from %q: %w", peerID, err)
	}
	req, err := marshalReceiptRequest(part, publisher)
	if err != nil {
		return nil, err
	}
	s, err := n.host.NewStream(ctx, id, ReceiptProtocol)
	if err != nil {
		return nil, fmt.Errorf("query receipts of %s from %s: open stream: %w", part, id, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() }) // unblocks reads when ctx ends
	defer stop()
	rs, truncated, err := exchangeReceipts(s, req)
	if err != nil {
		s.Reset()
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(err, ctxErr)
		}
		return nil, fmt.Errorf("query receipts of %s from %s: %w", part, id, err)
	}
	s.Close()
	if truncated {
		n.log.Warn("peer holds more chains than a receipt answer carries", "peer", peerID,
			"stream_part", part.String(), "publisher", streamr.UserID(publisher), "max", MaxReceipts)
	}
	return rs, nil
}

func exchangeReceipts(s network.Stream, req []byte) ([]streamr.ChainReceipt, bool, error) {
	if err := streamr.NewRawWriter(s).WriteFrame(req); err != nil {
		return nil, false, fmt.Errorf("send request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return nil, false, fmt.Errorf("send request: %w", err)
	}
	b, err := readControlFrame(s)
	if err != nil {
		return nil, false, fmt.Errorf("read status: %w", err)
	}
	st, err := unmarshalStatus(b)
	if err != nil {
		return nil, false, err
	}
	if err := receiptStatusErr(st); err != nil {
		return nil, false, err
	}
	rs, err := readReceipts(bufio.NewReader(s))
	return rs, st.truncated, err
}

// receiptStatusErr maps a status other than OK to its error.
func receiptStatusErr(s resendStatus) error {
	switch s.code {
	case codeOK:
		return nil
	case codeTooBusy:
		return ErrReceiptsBusy
	case codeBadRequest:
		return fmt.Errorf("%w: %s", ErrReceiptsRefused, s.message)
	case codeUnavailable:
		return fmt.Errorf("%w: %s", ErrReceiptsUnavailable, s.message)
	}
	return fmt.Errorf("%w: status %s", ErrInvalidReceipts, s.code)
}

// readReceipts reads the receipts of an OK answer up to EOF, checking
// their order and count.
func readReceipts(r io.Reader) ([]streamr.ChainReceipt, error) {
	var out []streamr.ChainReceipt
	for {
		b, err := readControlFrame(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if errors.Is(err, errControlFrameTooLarge) {
			return nil, fmt.Errorf("%w: receipt %d: %w", ErrInvalidReceipts, len(out)+1, err)
		}
		if err != nil {
			return nil, fmt.Errorf("read receipt %d: %w", len(out)+1, err)
		}
		rc, err := unmarshalReceipt(b)
		if err != nil {
			return nil, fmt.Errorf("%w: receipt %d: %w", ErrInvalidReceipts, len(out)+1, err)
		}
		switch {
		case len(out) == MaxReceipts:
			return nil, fmt.Errorf("%w: more than %d receipts", ErrInvalidReceipts, MaxReceipts)
		case len(out) > 0 && rc.ChainID <= out[len(out)-1].ChainID:
			return nil, fmt.Errorf("%w: chain %q after chain %q: not in increasing order", ErrInvalidReceipts, rc.ChainID, out[len(out)-1].ChainID)
		}
		out = append(out, rc)
	}
}

// ServeReceipts answers ReceiptProtocol queries from src. Call it once, at
// startup; a later call replaces src.
func (n *Node) ServeReceipts(src ReceiptSource) {
	srv := &receiptServer{
		src:     src,
		timeout: n.cfg.Resend.WriteTimeout,
		slots:   make(chan struct{}, receiptMaxStreams),
		log:     n.log.With("protocol", ReceiptProtocol),
	}
	n.host.SetStreamHandler(ReceiptProtocol, srv.handle)
}

type receiptServer struct {
	src     ReceiptSource
	timeout time.Duration // write progress timeout
	slots   chan struct{} // one token per answer in progress
	log     *slog.Logger
}

func (srv *receiptServer) handle(s network.Stream) {
	log := srv.log.With("peer", s.Conn().RemotePeer().String())
	if err := srv.answer(s, log); err != nil {
		s.Reset()
		log.Info("receipt answer aborted", "err", err)
		return
	}
	s.Close()
}

// answer reads the query and writes the answer; an error means the
// stream failed.
func (srv *receiptServer) answer(s network.Stream, log *slog.Logger) error {
	if err := s.SetReadDeadline(time.Now().Add(requestTimeout)); err != nil {
		return fmt.Errorf("set request deadline: %w", err)
	}
	b, err := readControlFrame(s)
	if errors.Is(err, errControlFrameTooLarge) {
		return srv.refuse(s, resendStatus{code: codeBadRequest, message: err.Error()})
	}
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	part, publisher, err := unmarshalReceiptRequest(b)
	if err != nil {
		return srv.refuse(s, resendStatus{code: codeBadRequest, message: err.Error()})
	}
	select {
	case srv.slots <- struct{}{}:
		defer func() { <-srv.slots }()
	default:
		return srv.refuse(s, resendStatus{code: codeTooBusy})
	}
	rs, err := srv.src.Receipts(part, publisher)
	if err != nil {
		log.Warn("receipts failed reading the store", "stream_part", part.String(), "err", err)
		return srv.refuse(s, resendStatus{code: codeUnavailable, message: err.Error()})
	}
	frames, truncated := encodeReceipts(rs, log)
	log.Debug("receipts answered", "stream_part", part.String(), "publisher", streamr.UserID(publisher),
		"chains", len(frames), "truncated", truncated)
	return srv.send(s, frames, truncated)
}

// refuse sends a status without receipts.
func (srv *receiptServer) refuse(s network.Stream, st resendStatus) error {
	w := deadlineWriter{s: s, timeout: srv.timeout}
	if err := streamr.NewRawWriter(w).WriteFrame(st.marshal()); err != nil {
		return fmt.Errorf("send status %s: %w", st.code, err)
	}
	return nil
}

func (srv *receiptServer) send(s network.Stream, frames [][]byte, truncated bool) error {
	bw := bufio.NewWriterSize(deadlineWriter{s: s, timeout: srv.timeout}, 32<<10)
	out := streamr.NewRawWriter(bw)
	if err := out.WriteFrame(resendStatus{code: codeOK, truncated: truncated}.marshal()); err != nil {
		return fmt.Errorf("send status: %w", err)
	}
	for _, f := range frames {
		if err := out.WriteFrame(f); err != nil {
			return fmt.Errorf("send receipts: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("send receipts: %w", err)
	}
	return nil
}

// encodeReceipts encodes the first MaxReceipts receipts by chain ID, one
// per chain, and reports whether there were more. A chain whose receipt
// cannot fit a frame is left out: it counts as not held.
func encodeReceipts(rs []streamr.ChainReceipt, log *slog.Logger) (frames [][]byte, truncated bool) {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b streamr.ChainReceipt) int { return cmp.Compare(a.ChainID, b.ChainID) })
	rs = slices.CompactFunc(rs, func(a, b streamr.ChainReceipt) bool { return a.ChainID == b.ChainID })
	for _, rc := range rs {
		b := marshalReceipt(rc)
		if rc.ChainID == "" || len(b) > maxControlFrame {
			log.Warn("receipt left out of the answer: chain ID empty or too long", "chain_bytes", len(rc.ChainID))
			continue
		}
		if len(frames) == MaxReceipts {
			return frames, true
		}
		frames = append(frames, b)
	}
	return frames, false
}

func marshalReceiptRequest(part streamr.StreamPartID, publisher []byte) ([]byte, error) {
	if len(publisher) == 0 {
		return nil, fmt.Errorf("receipt query of %s: no publisher ID", part)
	}
	b := protowire.AppendTag(nil, rreqStreamID, protowire.BytesType)
	b = protowire.AppendString(b, string(part.Stream))
	b = appendVarint(b, rreqPartition, uint64(part.Partition))
	b = protowire.AppendTag(b, rreqPublisherID, protowire.BytesType)
	b = protowire.AppendBytes(b, publisher)
	if len(b) > maxControlFrame {
		return nil, fmt.Errorf("receipt query of %s: encoded request of %d bytes exceeds %d", part, len(b), maxControlFrame)
	}
	return b, nil
}

// unmarshalReceiptRequest decodes and checks a ReceiptRequest; unknown
// fields are skipped.
func unmarshalReceiptRequest(b []byte) (streamr.StreamPartID, []byte, error) {
	var stream string
	var partition int64
	var publisher []byte
	err := decodeFields(b, func(num protowire.Number, v []byte, x uint64) {
		switch num {
		case rreqStreamID:
			stream = string(v)
		case rreqPartition:
			partition = int64(x)
		case rreqPublisherID:
			publisher = slices.Clone(v)
		}
	}, fieldTypes{rreqStreamID: protowire.BytesType, rreqPartition: protowire.VarintType, rreqPublisherID: protowire.BytesType})
	if err != nil {
		return streamr.StreamPartID{}, nil, fmt.Errorf("decode receipt request: %w", err)
	}
	id, err := streamr.ParseStreamID(stream)
	if err != nil {
		return streamr.StreamPartID{}, nil, fmt.Errorf("receipt request: %w", err)
	}
	if partition < 0 || partition >= streamr.MaxPartitions {
		return streamr.StreamPartID{}, nil, fmt.Errorf("receipt request: partition %d of %s must be 0 to %d", partition, id, streamr.MaxPartitions-1)
	}
	part := streamr.StreamPartID{Stream: id, Partition: int(partition)}
	if len(publisher) == 0 {
		return streamr.StreamPartID{}, nil, fmt.Errorf("receipt request of %s: no publisher ID", part)
	}
	return part, publisher, nil
}

func marshalReceipt(rc streamr.ChainReceipt) []byte {
	b := protowire.AppendTag(nil, receiptChainID, protowire.BytesType)
	b = protowire.AppendString(b, rc.ChainID)
	b = appendVarint(b, receiptTimestamp, uint64(rc.Last.Timestamp))
	return appendVarint(b, receiptSeqNo, uint64(int64(rc.Last.SequenceNumber)))
}

// unmarshalReceipt decodes a streamr.ChainReceipt; unknown fields are skipped.
func unmarshalReceipt(b []byte) (streamr.ChainReceipt, error) {
	var rc streamr.ChainReceipt
	var seq int64
	err := decodeFields(b, func(num protowire.Number, v []byte, x uint64) {
		switch num {
		case receiptChainID:
			rc.ChainID = string(v)
		case receiptTimestamp:
			rc.Last.Timestamp = int64(x)
		case receiptSeqNo:
			seq = int64(x)
		}
	}, fieldTypes{receiptChainID: protowire.BytesType, receiptTimestamp: protowire.VarintType, receiptSeqNo: protowire.VarintType})
	switch {
	case err != nil:
		return rc, fmt.Errorf("decode chain receipt: %w", err)
	case rc.ChainID == "":
		return rc, errors.New("chain receipt without chain ID")
	case seq < 0 || seq > math.MaxInt32:
		return rc, fmt.Errorf("chain receipt of %q: sequence number %d out of range", rc.ChainID, seq)
	}
	rc.Last.SequenceNumber = int32(seq)
	return rc, nil
}

// fieldTypes gives the wire type of each known field of a message.
type fieldTypes map[protowire.Number]protowire.Type

// decodeFields walks a protobuf message, calling set with each known
// field's value (v for bytes fields, x for varints). A known field with
// another wire type is an error; unknown fields are skipped.
func decodeFields(b []byte, set func(num protowire.Number, v []byte, x uint64), known fieldTypes) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		want, ok := known[num]
		switch {
		case ok && typ != want:
			return fmt.Errorf("field %d has wire type %d", num, typ)
		case ok && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				set(num, v, 0)
			}
		case ok:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			if n >= 0 {
				set(num, nil, x)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}
