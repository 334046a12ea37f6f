package overlay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// The request/response exchange that ResendProtocol and ReceiptProtocol
// share. All frames are [uint32 big-endian length][body]:
//
//  1. the client sends one request frame (a protobuf of at most
//     maxControlFrame bytes) and closes its write side;
//  2. the server answers with one pb.Status frame;
//  3. after OK come the answer's items, one per frame, then the server
//     closes the stream (EOF). A reset instead of EOF means the answer is
//     incomplete.

// maxControlFrame bounds requests, statuses and receipts: each is a few
// dozen bytes, so anything larger is refused before it is read.
const maxControlFrame = 4 << 10

// requestTimeout bounds how long a client may take to send its request.
const requestTimeout = 10 * time.Second

// marshalControl encodes a request, checking that it fits a control frame.
func marshalControl(m proto.Message, what string) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) > maxControlFrame {
		return nil, fmt.Errorf("%s: encoded request of %d bytes exceeds %d", what, len(b), maxControlFrame)
	}
	return b, nil
}

// codeLabel names a status code in logs and metrics: "ok", "too_busy", …
func codeLabel(c pb.Status_Code) string { return strings.ToLower(c.String()) }

func marshalStatus(st *pb.Status) []byte {
	if len(st.Message) > maxControlFrame/2 {
		st = &pb.Status{Code: st.Code, Message: st.Message[:maxControlFrame/2], Truncated: st.Truncated}
	}
	b, _ := proto.Marshal(st) // a Status of scalars always encodes
	return b
}

func unmarshalStatus(b []byte) (*pb.Status, error) {
	var st pb.Status
	if err := proto.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	if st.GetCode() == pb.Status_CODE_UNSPECIFIED {
		return nil, errors.New("decode status: no code")
	}
	return &st, nil
}

// errControlFrameTooLarge reports a request or status over maxControlFrame.
var errControlFrameTooLarge = fmt.Errorf("frame exceeds %d bytes", maxControlFrame)

// readControlFrame reads one frame of at most maxControlFrame bytes,
// reading nothing past it.
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

// call is the client side of one exchange after the status: the answer's
// items are read from r.
type call struct {
	s      network.Stream
	r      io.Reader
	status *pb.Status
	stop   func() bool
}

// ask opens a stream of protocol pid to p, sends req and reads the status. open
// bounds the opening of the stream, progress each read of the answer (the
// status's too); zero leaves either to ctx alone. ctx ending resets the
// stream. The caller ends a call it got with done; on error the stream is
// reset already.
func (n *Node) ask(ctx context.Context, p peer.ID, pid protocol.ID, req []byte, open, progress time.Duration) (*call, error) {
	octx, cancel := ctx, context.CancelFunc(func() {})
	if open > 0 {
		octx, cancel = context.WithTimeout(ctx, open)
	}
	s, err := n.host.NewStream(octx, p, pid)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	c := &call{s: s, r: s, stop: context.AfterFunc(ctx, func() { s.Reset() })} // unblocks reads when ctx ends
	if progress > 0 {
		c.r = progressReader{s: s, timeout: progress}
	} else {
		c.r = bufio.NewReader(s)
	}
	if c.status, err = c.request(req); err != nil {
		c.done(err)
		return nil, withCtxErr(ctx, err)
	}
	return c, nil
}

func (c *call) request(req []byte) (*pb.Status, error) {
	if err := streamr.NewRawWriter(c.s).WriteFrame(req); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	if err := c.s.CloseWrite(); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	b, err := readControlFrame(c.r)
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	return unmarshalStatus(b)
}

// done ends the call: the stream is closed after a complete answer (err
// nil) and reset otherwise, which also tells the server that the rest is
// not wanted.
func (c *call) done(err error) {
	c.stop()
	if err != nil {
		c.s.Reset()
		return
	}
	c.s.Close()
}

// withCtxErr adds ctx's error to err when ctx ended: a read that failed
// because ctx reset the stream then says why.
func withCtxErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return errors.Join(err, ctxErr)
	}
	return err
}

// progressReader gives every read of a stream its own deadline.
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

// readRequest is the server side's first step: it reads and decodes the
// request within requestTimeout. A request that is too large or does not
// decode yields the BAD_REQUEST status to answer with; err is a failed
// stream.
func readRequest[T any](s network.Stream, decode func([]byte) (T, error)) (req T, bad *pb.Status, err error) {
	if err := s.SetReadDeadline(time.Now().Add(requestTimeout)); err != nil {
		return req, nil, fmt.Errorf("set request deadline: %w", err)
	}
	b, err := readControlFrame(s)
	if errors.Is(err, errControlFrameTooLarge) {
		return req, &pb.Status{Code: pb.Status_BAD_REQUEST, Message: err.Error()}, nil
	}
	if err != nil {
		return req, nil, fmt.Errorf("read request: %w", err)
	}
	if req, err = decode(b); err != nil {
		return req, &pb.Status{Code: pb.Status_BAD_REQUEST, Message: err.Error()}, nil
	}
	return req, nil, nil
}

// writeStatus answers with a status and no items.
func writeStatus(s network.Stream, timeout time.Duration, st *pb.Status) error {
	if err := streamr.NewRawWriter(deadlineWriter{s: s, timeout: timeout}).WriteFrame(marshalStatus(st)); err != nil {
		return fmt.Errorf("send status %s: %w", codeLabel(st.GetCode()), err)
	}
	return nil
}

// answerWriter writes an OK status and the answer's items through a
// buffer; every write to the stream must make progress within timeout.
type answerWriter struct {
	bw  *bufio.Writer
	out *streamr.RawWriter
}

func newAnswerWriter(s network.Stream, timeout time.Duration, truncated bool) (*answerWriter, error) {
	bw := bufio.NewWriterSize(deadlineWriter{s: s, timeout: timeout}, 32<<10)
	a := &answerWriter{bw: bw, out: streamr.NewRawWriter(bw)}
	if err := a.out.WriteFrame(marshalStatus(&pb.Status{Code: pb.Status_OK, Truncated: truncated})); err != nil {
		return nil, fmt.Errorf("send status: %w", err)
	}
	return a, nil
}

// item writes one item frame.
func (a *answerWriter) item(b []byte) error { return a.out.WriteFrame(b) }

// flush sends what is buffered.
func (a *answerWriter) flush() error { return a.bw.Flush() }

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
