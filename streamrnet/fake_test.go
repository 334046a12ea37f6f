package streamrnet

import (
	"context"
	"errors"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// fakeConn is a Conn whose reads come from in and whose writes are kept.
type fakeConn struct {
	in     chan []byte
	mu     sync.Mutex
	out    [][]byte
	closed chan struct{}
	once   sync.Once
}

func newFakeConn(frames ...[]byte) *fakeConn {
	c := &fakeConn{in: make(chan []byte, len(frames)+256), closed: make(chan struct{})}
	for _, f := range frames {
		c.in <- f
	}
	return c
}

var errFakeClosed = errors.New("fake connection closed")

func (c *fakeConn) ReadFrame(ctx context.Context) ([]byte, error) {
	select {
	case f := <-c.in:
		return f, nil
	case <-c.closed:
		return nil, errFakeClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *fakeConn) WriteFrame(_ context.Context, frame []byte) error {
	select {
	case <-c.closed:
		return errFakeClosed
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, append([]byte(nil), frame...))
	return nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) written() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.out...)
}

// testSession is a handshaken session on a fake connection.
func testSession(t testing.TB, conn Conn, lim Limits) *session {
	t.Helper()
	lim = lim.withDefaults()
	resp := mustMarshal(t, &pb.Message{MessageId: "h", ServiceId: handshakeService, Body: &pb.Message_HandshakeResponse{
		HandshakeResponse: &pb.HandshakeResponse{SourcePeerDescriptor: &pb.PeerDescriptor{NodeId: newNodeID()}, ProtocolVersion: ProtocolVersion}}})
	fc := conn.(*fakeConn)
	fc.in <- resp
	s, err := handshake(context.Background(), conn, "ws://fake", clientDescriptor(newNodeID()), lim, ProtocolVersion)
	if err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.out = nil // the handshake request
	fc.mu.Unlock()
	return s
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rpcFrame is a frame carrying an RPC message to the client.
func rpcFrame(t testing.TB, service string, rpc *pb.RpcMessage) []byte {
	return mustMarshal(t, envelope(service, &pb.PeerDescriptor{NodeId: newNodeID()}, nil, rpc))
}

// countingEvents records what a session reports.
type countingEvents struct {
	mu       sync.Mutex
	messages int
	drops    map[string]int
	unknown  int
	left     int
}

func (c *countingEvents) events() sessionEvents {
	c.drops = make(map[string]int)
	return sessionEvents{
		streamMessage: func(string, []byte) { c.mu.Lock(); c.messages++; c.mu.Unlock() },
		dropped:       func(k string) { c.mu.Lock(); c.drops[k]++; c.mu.Unlock() },
		left:          func(string) { c.mu.Lock(); c.left++; c.mu.Unlock() },
		unknown:       func(string, string) { c.mu.Lock(); c.unknown++; c.mu.Unlock() },
	}
}

func testKey(t testing.TB) *streamr.EVMKey {
	t.Helper()
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
