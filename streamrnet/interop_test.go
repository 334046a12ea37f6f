package streamrnet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
	"github.com/tributary-iot/tributary/streamrnet/jsnet"
)

const testPart = "0x00000000000000000000000000000000000000aa/interop#0"

// signedChain returns n chained messages of part signed with key.
func signedChain(t testing.TB, key *streamr.EVMKey, part string, n int, content func(i int) string) [][]byte {
	t.Helper()
	contents := make([]string, n)
	for i := range contents {
		contents[i] = content(i)
	}
	return jsnet.SignedChain(t, key, part, contents)
}

func newTestClient(t testing.TB, proxies []string, key *streamr.EVMKey, deliver func(string, []byte)) *Client {
	t.Helper()
	addr := key.Address()
	c, err := New(Config{Proxies: proxies, UserID: addr[:], Dialer: WebSocketDialer{}, Deliver: deliver,
		Limits: Limits{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runClient(t testing.TB, c *Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// publishAll retries Publish until the proxy accepted the partition.
func publishAll(t testing.TB, c *Client, part string, msgs [][]byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(msgs) > 0 {
		n, err := c.Publish(context.Background(), part, msgs)
		msgs = msgs[n:]
		if err == nil {
			return
		}
		if !errors.Is(err, streamr.ErrNoPeers) || time.Now().After(deadline) {
			t.Fatalf("publish: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPublishToRealNodes: messages the Go client signs and publishes
// through the proxy node reach the other JS node in order, where
// @streamr/utils verifies every signature and refuses a tampered copy.
func TestPublishToRealNodes(t *testing.T) {
	ports := jsnet.FreePorts(t, 2)
	net := jsnet.Start(t, [2]int{ports[0], ports[1]}, testPart)
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, []string{net.ProxyURL}, key, nil)
	c.Join(testPart, Publish)
	runClient(t, c)
	const n = 5
	publishAll(t, c, testPart, signedChain(t, key, testPart, n, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) }))
	me := "0x" + strings.ToLower(fmt.Sprintf("%x", key.PublisherID()))
	for i := range n {
		e := net.Wait(30*time.Second, func(e jsnet.Event) bool { return e.Event == "message" && e.Publisher == me })
		if want := fmt.Sprintf(`{"i":%d}`, i); e.Content != want {
			t.Fatalf("message %d: content %q, want %q (out of order or lost)", i, e.Content, want)
		}
		if e.SignatureValid == nil || !*e.SignatureValid {
			t.Errorf("message %d: @streamr/utils refused the signature (%s)", i, e.VerifyError)
		}
		if e.TamperedValid == nil || *e.TamperedValid {
			t.Errorf("message %d: @streamr/utils accepted a tampered copy", i)
		}
		if (i == 0) != (e.Prev == nil) {
			t.Errorf("message %d: previous ref %v", i, e.Prev)
		}
	}
	if st := c.Proxies()[0]; st.State != streamr.ProxyConnected || st.MessagesOut != n {
		t.Errorf("proxy state %+v, want connected with %d out", st, n)
	}
}

// TestSubscribeFromRealNodes: messages signed in JS and published by the
// other node reach the Go client through the proxy, and verify in Go.
func TestSubscribeFromRealNodes(t *testing.T) {
	ports := jsnet.FreePorts(t, 2)
	net := jsnet.Start(t, [2]int{ports[0], ports[1]}, testPart)
	key, _ := streamr.GenerateEVMKey()
	var mu sync.Mutex
	got := make(chan *streamr.StreamMessage, 100)
	c := newTestClient(t, []string{net.ProxyURL}, key, func(part string, raw []byte) {
		mu.Lock()
		defer mu.Unlock()
		m, err := streamr.Unmarshal(raw)
		if err != nil || part != testPart {
			t.Errorf("delivered %s: %v", part, err)
			return
		}
		got <- m
	})
	c.Join(testPart, Subscribe)
	runClient(t, c)
	waitJoined(t, c, testPart)
	net.Send(map[string]any{"cmd": "publish", "streamPart": testPart, "contents": []string{`{"js":0}`, `{"js":1}`, `{"js":2}`}})
	for i := range 3 {
		select {
		case m := <-got:
			if err := streamr.VerifySignature(m); err != nil {
				t.Errorf("message %d signed in JS: %v", i, err)
			}
			if want := fmt.Sprintf(`{"js":%d}`, i); string(m.Content().Content) != want {
				t.Errorf("message %d: %q, want %q", i, m.Content().Content, want)
			}
			if m.ID.PublisherHex() != net.Publisher {
				t.Errorf("publisher %s, want %s", m.ID.PublisherHex(), net.Publisher)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d signed in JS never arrived", i)
		}
	}
}

// waitJoined waits until a proxy accepted the partition.
func waitJoined(t testing.TB, c *Client, part string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range c.proxies {
			if p.joinedSession(part) != nil {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no proxy accepted %s: %+v", part, c.Proxies())
}

// TestRealNodeProtocolErrors: the node's answers to what it must refuse
// come back as errors that name the problem.
func TestRealNodeProtocolErrors(t *testing.T) {
	ports := jsnet.FreePorts(t, 2)
	net := jsnet.Start(t, [2]int{ports[0], ports[1]}, testPart)
	ctx := context.Background()
	local := clientDescriptor(newNodeID())
	lim := Limits{}.withDefaults()
	dial := func() Conn {
		conn, err := WebSocketDialer{}.Dial(ctx, net.ProxyURL, lim.MaxFrameBytes)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	t.Run("old protocol version", func(t *testing.T) {
		_, err := handshake(ctx, dial(), net.ProxyURL, local, lim, "0.9")
		var he *HandshakeError
		if !errors.As(err, &he) || he.Reason != pb.HandshakeError_UNSUPPORTED_PROTOCOL_VERSION.String() {
			t.Fatalf("handshake with version 0.9: %v, want UNSUPPORTED_PROTOCOL_VERSION", err)
		}
	})
	t.Run("wrong target node", func(t *testing.T) {
		conn := dial()
		err := rawHandshake(ctx, conn, local, &pb.PeerDescriptor{NodeId: newNodeID(), Type: pb.NodeType_NODEJS})
		if err == nil || !strings.Contains(err.Error(), "INVALID_TARGET_PEER_DESCRIPTOR") {
			t.Fatalf("handshake naming another node: %v, want INVALID_TARGET_PEER_DESCRIPTOR", err)
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		s, err := handshake(ctx, dial(), net.ProxyURL, local, lim, ProtocolVersion)
		if err != nil {
			t.Fatal(err)
		}
		s.ev = sessionEvents{streamMessage: func(string, []byte) {}, dropped: func(string) {}, left: func(string) {}, unknown: func(string, string) {}}
		go s.run(ctx)
		var resp pb.ProxyConnectionResponse
		err = s.call(ctx, deliveryService(testPart), "noSuchMethod", &pb.ProxyConnectionRequest{}, &resp)
		var re *RPCError
		if !errors.As(err, &re) || re.Type != pb.RpcErrorType_UNKNOWN_RPC_METHOD {
			t.Fatalf("unknown method: %v, want UNKNOWN_RPC_METHOD", err)
		}
	})
}

// rawHandshake sends a handshake request naming target and returns the
// node's refusal, if any.
func rawHandshake(ctx context.Context, conn Conn, local, target *pb.PeerDescriptor) error {
	req := &pb.Message{MessageId: newMessageID(), SourceDescriptor: local, ServiceId: handshakeService,
		Body: &pb.Message_HandshakeRequest{HandshakeRequest: &pb.HandshakeRequest{
			SourcePeerDescriptor: local, TargetPeerDescriptor: target, ProtocolVersion: ProtocolVersion}}}
	b, _ := marshal(req)
	if err := conn.WriteFrame(ctx, b); err != nil {
		return err
	}
	for {
		frame, err := conn.ReadFrame(ctx)
		if err != nil {
			return err
		}
		m, err := decodeFrame(frame)
		if err != nil {
			return err
		}
		if r := m.GetHandshakeResponse(); r != nil {
			if r.Error != nil {
				return fmt.Errorf("refused: %s", r.GetError())
			}
			return nil
		}
	}
}
