package overlay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// ReceiptProtocol is the libp2p protocol with which a publishing gateway
// asks a node how far it holds the publisher's message chains in one
// stream partition (delivery receipts). The answer is the node's own
// claim; the Noise handshake authenticates which peer made it.
//
// One query per stream, in the exchange ResendProtocol uses (see
// exchange.go; messages in streamr/pb/tributary.proto): the client sends a
// ReceiptRequest (stream, partition and the required publisher ID); the
// server answers with a Status: OK, BAD_REQUEST (with a reason), TOO_BUSY
// or UNAVAILABLE, truncated if it holds more than MaxReceipts chains.
// After OK come up to MaxReceipts ChainReceipt frames of at most 4 KiB,
// one per chain the node holds messages of, in increasing chain ID order
// (none if it holds nothing): each names the chain's last message held,
// every one of the chain up to it being held.
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
	c, err := n.ask(ctx, id, ReceiptProtocol, req, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("query receipts of %s from %s: %w", part, id, err)
	}
	rs, err := readReceiptAnswer(c)
	c.done(err)
	if err != nil {
		return nil, fmt.Errorf("query receipts of %s from %s: %w", part, id, withCtxErr(ctx, err))
	}
	if c.status.GetTruncated() {
		n.log.Warn("peer holds more chains than a receipt answer carries", "peer", peerID,
			"stream_part", part.String(), "publisher", streamr.UserID(publisher), "max", MaxReceipts)
	}
	return rs, nil
}

func readReceiptAnswer(c *call) ([]streamr.ChainReceipt, error) {
	if err := receiptStatusErr(c.status); err != nil {
		return nil, err
	}
	return readReceipts(c.r)
}

// receiptStatusErr maps a status other than OK to its error.
func receiptStatusErr(st *pb.Status) error {
	switch st.GetCode() {
	case pb.Status_OK:
		return nil
	case pb.Status_TOO_BUSY:
		return ErrReceiptsBusy
	case pb.Status_BAD_REQUEST:
		return fmt.Errorf("%w: %s", ErrReceiptsRefused, st.GetMessage())
	case pb.Status_UNAVAILABLE:
		return fmt.Errorf("%w: %s", ErrReceiptsUnavailable, st.GetMessage())
	}
	return fmt.Errorf("%w: status %s", ErrInvalidReceipts, codeLabel(st.GetCode()))
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

// receiptQuery is a decoded ReceiptRequest.
type receiptQuery struct {
	part      streamr.StreamPartID
	publisher []byte
}

// answer reads the query and writes the answer; an error means the
// stream failed.
func (srv *receiptServer) answer(s network.Stream, log *slog.Logger) error {
	q, bad, err := readRequest(s, unmarshalReceiptRequest)
	if err != nil {
		return err
	}
	if bad != nil {
		return writeStatus(s, srv.timeout, bad)
	}
	select {
	case srv.slots <- struct{}{}:
		defer func() { <-srv.slots }()
	default:
		return writeStatus(s, srv.timeout, &pb.Status{Code: pb.Status_TOO_BUSY})
	}
	rs, err := srv.src.Receipts(q.part, q.publisher)
	if err != nil {
		log.Warn("receipts failed reading the store", "stream_part", q.part.String(), "err", err)
		return writeStatus(s, srv.timeout, &pb.Status{Code: pb.Status_UNAVAILABLE, Message: err.Error()})
	}
	frames, truncated := encodeReceipts(rs, log)
	log.Debug("receipts answered", "stream_part", q.part.String(), "publisher", streamr.UserID(q.publisher),
		"chains", len(frames), "truncated", truncated)
	return srv.send(s, frames, truncated)
}

func (srv *receiptServer) send(s network.Stream, frames [][]byte, truncated bool) error {
	out, err := newAnswerWriter(s, srv.timeout, truncated)
	if err != nil {
		return err
	}
	for _, f := range frames {
		if err := out.item(f); err != nil {
			return fmt.Errorf("send receipts: %w", err)
		}
	}
	if err := out.flush(); err != nil {
		return fmt.Errorf("send receipts: %w", err)
	}
	return nil
}

// encodeReceipts encodes the first MaxReceipts receipts by chain ID, one
// per chain, and reports whether there were more. A chain whose receipt
// cannot be encoded or fit a frame is left out: it counts as not held.
func encodeReceipts(rs []streamr.ChainReceipt, log *slog.Logger) (frames [][]byte, truncated bool) {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b streamr.ChainReceipt) int { return cmp.Compare(a.ChainID, b.ChainID) })
	rs = slices.CompactFunc(rs, func(a, b streamr.ChainReceipt) bool { return a.ChainID == b.ChainID })
	for _, rc := range rs {
		b, err := marshalReceipt(rc)
		if err != nil || rc.ChainID == "" || len(b) > maxControlFrame {
			log.Warn("receipt left out of the answer: chain ID empty, not UTF-8 or too long", "chain_bytes", len(rc.ChainID))
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
	w := &pb.ReceiptRequest{StreamId: string(part.Stream), Partition: int32(part.Partition), PublisherId: publisher}
	return marshalControl(w, "receipt query of "+part.String())
}

// unmarshalReceiptRequest decodes and checks a ReceiptRequest; unknown
// fields are skipped.
func unmarshalReceiptRequest(b []byte) (receiptQuery, error) {
	var w pb.ReceiptRequest
	if err := proto.Unmarshal(b, &w); err != nil {
		return receiptQuery{}, fmt.Errorf("decode receipt request: %w", err)
	}
	part, err := wirePart(w.GetStreamId(), w.GetPartition())
	if err != nil {
		return receiptQuery{}, fmt.Errorf("receipt request: %w", err)
	}
	if len(w.GetPublisherId()) == 0 {
		return receiptQuery{}, fmt.Errorf("receipt request of %s: no publisher ID", part)
	}
	return receiptQuery{part: part, publisher: w.GetPublisherId()}, nil
}

// marshalReceipt encodes rc; a chain ID that is not UTF-8 cannot be.
func marshalReceipt(rc streamr.ChainReceipt) ([]byte, error) {
	return proto.Marshal(&pb.ChainReceipt{MsgChainId: rc.ChainID, Timestamp: rc.Last.Timestamp, SequenceNumber: rc.Last.SequenceNumber})
}

// unmarshalReceipt decodes a ChainReceipt; unknown fields are skipped.
func unmarshalReceipt(b []byte) (streamr.ChainReceipt, error) {
	var w pb.ChainReceipt
	if err := proto.Unmarshal(b, &w); err != nil {
		return streamr.ChainReceipt{}, fmt.Errorf("decode chain receipt: %w", err)
	}
	if w.GetMsgChainId() == "" {
		return streamr.ChainReceipt{}, errors.New("chain receipt without chain ID")
	}
	last, err := wireRef(w.GetTimestamp(), w.GetSequenceNumber())
	if err != nil {
		return streamr.ChainReceipt{}, fmt.Errorf("chain receipt of %q: %w", w.GetMsgChainId(), err)
	}
	return streamr.ChainReceipt{ChainID: w.GetMsgChainId(), Last: last}, nil
}
