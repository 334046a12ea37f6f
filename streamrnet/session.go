package streamrnet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/tributary-iot/tributary/streamr/pb"
)

// RPCError is an error response of the remote node.
type RPCError struct {
	Method string
	Type   pb.RpcErrorType
	Msg    string
}

func (e *RPCError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%s: remote %s: %s", e.Method, e.Type, e.Msg)
	}
	return fmt.Sprintf("%s: remote %s", e.Method, e.Type)
}

// ErrTooManyRequests reports a request refused at Limits.MaxPendingRequests.
var ErrTooManyRequests = errors.New("too many outstanding requests to the node")

// HandshakeError is a handshake the node refused.
type HandshakeError struct {
	URL    string
	Reason string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("handshake with %s refused: %s", e.URL, e.Reason)
}

// sessionEvents are the callbacks of a session into its owner.
type sessionEvents struct {
	// streamMessage gets a sendStreamMessage of a stream partition.
	streamMessage func(streamPart string, raw []byte)
	// dropped counts a frame or request refused, by kind.
	dropped func(kind string)
	// left reports the node's leaveStreamPartNotice for a stream partition.
	left func(streamPart string)
	// unknown reports a request answered UNKNOWN_RPC_METHOD.
	unknown func(service, method string)
}

// session is one handshaken connection to a Streamr node.
type session struct {
	conn   Conn
	url    string
	local  *pb.PeerDescriptor
	remote *pb.PeerDescriptor
	limits Limits
	ev     sessionEvents
	rate   *rate.Limiter

	wmu sync.Mutex // one writer at a time

	mu      sync.Mutex
	pending map[string]chan *pb.RpcMessage
	err     error // why the read loop ended
	done    chan struct{}
}

// handshake opens a session on conn: it sends the handshake request and
// waits for the node's answer, which names the node.
func handshake(ctx context.Context, conn Conn, url string, local *pb.PeerDescriptor, limits Limits, version string) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, limits.RequestTimeout)
	defer cancel()
	// Conn reads need not watch ctx: closing the connection ends them.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req := &pb.Message{
		MessageId:        newMessageID(),
		SourceDescriptor: local,
		ServiceId:        handshakeService,
		Body: &pb.Message_HandshakeRequest{HandshakeRequest: &pb.HandshakeRequest{
			SourcePeerDescriptor: local, ProtocolVersion: version, ApplicationVersion: "tributary",
		}},
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	if err := conn.WriteFrame(ctx, b); err != nil {
		return nil, fmt.Errorf("send handshake to %s: %w", url, err)
	}
	for {
		frame, err := conn.ReadFrame(ctx)
		if err != nil {
			return nil, fmt.Errorf("await handshake of %s: %w", url, err)
		}
		m, err := decodeFrame(frame)
		if err != nil {
			return nil, fmt.Errorf("handshake of %s: %w", url, err)
		}
		resp := m.GetHandshakeResponse()
		if resp == nil {
			continue // nothing else may precede the handshake; ignore it
		}
		// The zero value of HandshakeError is DUPLICATE_CONNECTION: test presence.
		if resp.Error != nil {
			return nil, &HandshakeError{URL: url, Reason: resp.GetError().String()}
		}
		if got := majorVersion(resp.GetProtocolVersion()); got != majorVersion(version) {
			return nil, &HandshakeError{URL: url, Reason: fmt.Sprintf("protocol version %q, this client speaks %q", resp.GetProtocolVersion(), version)}
		}
		remote := resp.GetSourcePeerDescriptor()
		if len(remote.GetNodeId()) == 0 {
			return nil, &HandshakeError{URL: url, Reason: "the node sent no node ID"}
		}
		return &session{
			conn: conn, url: url, local: local, remote: remote, limits: limits,
			rate:    rate.NewLimiter(rate.Limit(limits.MaxFramesPerSecond), limits.MaxFramesPerSecond),
			pending: make(map[string]chan *pb.RpcMessage), done: make(chan struct{}),
		}, nil
	}
}

func newMessageID() string { return envelope("", nil, nil, nil).MessageId }

// run reads frames until the connection fails or ctx ends, reporting to
// ev (set before run starts: requests read it too).
func (s *session) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	defer s.conn.Close() // a failed read leaves the connection unusable
	var err error
	for {
		var frame []byte
		frame, err = s.conn.ReadFrame(ctx)
		if err != nil {
			break
		}
		if !s.rate.Allow() {
			s.ev.dropped("rate")
			continue
		}
		s.handleFrame(ctx, frame)
	}
	s.mu.Lock()
	s.err = fmt.Errorf("connection to %s: %w", s.url, err)
	for id, ch := range s.pending {
		close(ch)
		delete(s.pending, id)
	}
	s.mu.Unlock()
	close(s.done)
	return s.err
}

func (s *session) handleFrame(ctx context.Context, frame []byte) {
	m, err := decodeFrame(frame)
	if err != nil {
		s.ev.dropped("decode")
		return
	}
	rpc := m.GetRpcMessage()
	if rpc == nil {
		s.ev.dropped("unexpected")
		return
	}
	if isResponse(rpc) {
		s.mu.Lock()
		ch, ok := s.pending[rpc.GetRequestId()]
		delete(s.pending, rpc.GetRequestId())
		s.mu.Unlock()
		if !ok {
			s.ev.dropped("unsolicited_response")
			return
		}
		ch <- rpc // buffered, one response
		return
	}
	s.serve(ctx, m.GetServiceId(), rpc)
}

// serve answers the requests and notifications a node sends to a client.
func (s *session) serve(ctx context.Context, service string, rpc *pb.RpcMessage) {
	method := rpc.GetHeader()[hdrMethod]
	var reply proto.Message
	switch {
	case method == "sendStreamMessage" && isNotification(rpc):
		part, ok := streamPartOf(service)
		if !ok || anyName(rpc.GetBody()) != "StreamMessage" {
			s.ev.dropped("unexpected")
			return
		}
		s.ev.streamMessage(part, rpc.GetBody().GetValue())
		return
	case method == "leaveStreamPartNotice":
		var n pb.LeaveStreamPartNotice
		if part, ok := streamPartOf(service); ok && unpackAny(rpc.GetBody(), &n) == nil && n.GetStreamPartId() == part {
			s.ev.left(part)
		}
		return
	case service == lockService && method == "lockRequest":
		reply = &pb.LockResponse{Accepted: true}
	case service == lockService && (method == "unlockRequest" || method == "gracefulDisconnect" || method == "setPrivate"):
		if method == "gracefulDisconnect" {
			defer s.conn.Close() // the node is leaving; answer first
		}
		reply = &emptypb.Empty{}
	}
	if reply == nil {
		s.ev.unknown(service, method)
	}
	if isNotification(rpc) {
		return
	}
	if reply == nil {
		t := pb.RpcErrorType_UNKNOWN_RPC_METHOD
		s.send(ctx, service, responseMessage(rpc, nil, &t, "method "+method+" is not served by this client"))
		return
	}
	body, err := packAny(reply)
	if err != nil {
		return
	}
	s.send(ctx, service, responseMessage(rpc, body, nil, ""))
}

// send writes one RPC message to the node.
func (s *session) send(ctx context.Context, service string, rpc *pb.RpcMessage) error {
	b, err := proto.Marshal(envelope(service, s.local, s.remote, rpc))
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.limits.RequestTimeout)
	defer cancel()
	return s.conn.WriteFrame(ctx, b)
}

// call sends a request and waits for its response.
func (s *session) call(ctx context.Context, service, method string, req, resp proto.Message) error {
	body, err := packAny(req)
	if err != nil {
		return err
	}
	msg := requestMessage(method, body, false)
	ch := make(chan *pb.RpcMessage, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	if len(s.pending) >= s.limits.MaxPendingRequests {
		s.mu.Unlock()
		s.ev.dropped("pending_requests")
		return fmt.Errorf("%s: %w (%d)", method, ErrTooManyRequests, s.limits.MaxPendingRequests)
	}
	s.pending[msg.GetRequestId()] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, msg.GetRequestId())
		s.mu.Unlock()
	}()
	if err := s.send(ctx, service, msg); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	timer := time.NewTimer(s.limits.RequestTimeout)
	defer timer.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: %w", method, s.closedErr())
		}
		if r.ErrorType != nil {
			return &RPCError{Method: method, Type: r.GetErrorType(), Msg: r.GetErrorMessage()}
		}
		return unpackAny(r.GetBody(), resp)
	case <-timer.C:
		return fmt.Errorf("%s: no response from %s within %s", method, s.url, s.limits.RequestTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) closedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// notify sends a one-way notification.
func (s *session) notify(ctx context.Context, service, method string, body *anypb.Any) error {
	return s.send(ctx, service, requestMessage(method, body, true))
}

// requestProxy asks the node to proxy a stream partition for userID.
func (s *session) requestProxy(ctx context.Context, streamPart string, dir pb.ProxyDirection, userID []byte) (bool, error) {
	var resp pb.ProxyConnectionResponse
	err := s.call(ctx, deliveryService(streamPart), "requestConnection",
		&pb.ProxyConnectionRequest{Direction: &dir, UserId: userID}, &resp)
	return resp.GetAccepted(), err
}

// setPrivate asks the node to keep this connection out of its DHT: a
// client-only node routes nothing, and a node that routed DHT requests
// through it would lose them (Streamr's SDK proxy clients do the same;
// nodes accepting proxy connections honour it).
func (s *session) setPrivate(ctx context.Context) error {
	body, err := packAny(&pb.SetPrivateRequest{IsPrivate: true})
	if err != nil {
		return err
	}
	return s.notify(ctx, lockService, "setPrivate", body)
}

// lock keeps the node from closing the connection while it is idle.
func (s *session) lock(ctx context.Context) (bool, error) {
	var resp pb.LockResponse
	err := s.call(ctx, lockService, "lockRequest", &pb.LockRequest{LockId: proxyLockID}, &resp)
	return resp.GetAccepted(), err
}

// publish sends one encoded StreamMessage.
func (s *session) publish(ctx context.Context, streamPart string, raw []byte) error {
	return s.notify(ctx, deliveryService(streamPart), "sendStreamMessage", rawAny("StreamMessage", raw))
}

// leave tells the node this client leaves the stream partition.
func (s *session) leave(ctx context.Context, streamPart string) error {
	body, err := packAny(&pb.LeaveStreamPartNotice{StreamPartId: streamPart})
	if err != nil {
		return err
	}
	return s.notify(ctx, deliveryService(streamPart), "leaveStreamPartNotice", body)
}
