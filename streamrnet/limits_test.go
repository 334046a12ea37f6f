package streamrnet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/streamr/pb"
)

// TestSessionServes: what the client answers to each kind of request or
// notification a node sends.
func TestSessionServes(t *testing.T) {
	lockBody, _ := packAny(&pb.LockRequest{LockId: "x"})
	leave, _ := packAny(&pb.LeaveStreamPartNotice{StreamPartId: testPart})
	tests := []struct {
		name    string
		frame   []byte
		answer  string // "" none, else the method of the response
		errType *pb.RpcErrorType
		check   func(*countingEvents) bool
	}{
		{"lock request", rpcFrame(t, lockService, requestMessage("lockRequest", lockBody, false)), "lockRequest", nil, nil},
		{"unknown method", rpcFrame(t, "layer0", requestMessage("routeRequest", lockBody, false)), "routeRequest",
			pb.RpcErrorType_UNKNOWN_RPC_METHOD.Enum(), func(e *countingEvents) bool { return e.unknown == 1 }},
		{"unknown notification", rpcFrame(t, "layer0", requestMessage("leaveNotice", lockBody, true)), "", nil,
			func(e *countingEvents) bool { return e.unknown == 1 }},
		{"stream message", rpcFrame(t, deliveryService(testPart), requestMessage("sendStreamMessage", rawAny("StreamMessage", []byte{10, 0}), true)), "", nil,
			func(e *countingEvents) bool { return e.messages == 1 }},
		{"stream message of another type", rpcFrame(t, deliveryService(testPart), requestMessage("sendStreamMessage", lockBody, true)), "", nil,
			func(e *countingEvents) bool { return e.messages == 0 && e.drops["unexpected"] == 1 }},
		{"leave notice", rpcFrame(t, deliveryService(testPart), requestMessage("leaveStreamPartNotice", leave, true)), "", nil,
			func(e *countingEvents) bool { return e.left == 1 }},
		{"unsolicited response", rpcFrame(t, lockService, &pb.RpcMessage{Header: map[string]string{hdrResponse: hdrResponse}, RequestId: "x"}), "", nil,
			func(e *countingEvents) bool { return e.drops["unsolicited_response"] == 1 }},
		{"garbage", []byte{0xff, 0x01}, "", nil, func(e *countingEvents) bool { return e.drops["decode"] == 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := newFakeConn()
			s := testSession(t, conn, Limits{})
			var ev countingEvents
			s.ev = ev.events()
			s.handleFrame(context.Background(), tc.frame)
			out := conn.written()
			if tc.answer == "" {
				if len(out) != 0 {
					t.Fatalf("answered %d frames, want none", len(out))
				}
			} else {
				if len(out) != 1 {
					t.Fatalf("answered %d frames, want 1", len(out))
				}
				var m pb.Message
				if err := proto.Unmarshal(out[0], &m); err != nil {
					t.Fatal(err)
				}
				r := m.GetRpcMessage()
				if r.GetHeader()[hdrMethod] != tc.answer || !isResponse(r) || (r.ErrorType == nil) != (tc.errType == nil) ||
					(tc.errType != nil && r.GetErrorType() != *tc.errType) {
					t.Fatalf("answer %v", r)
				}
			}
			if tc.check != nil && !tc.check(&ev) {
				t.Fatalf("events: %d messages, %d left, %d unknown, drops %v", ev.messages, ev.left, ev.unknown, ev.drops)
			}
		})
	}
}

// TestSessionLimits: frames beyond max_frames_per_second are dropped and
// counted; requests beyond max_pending_requests fail at once; a request
// without an answer times out.
func TestSessionLimits(t *testing.T) {
	t.Run("frame rate", func(t *testing.T) {
		conn := newFakeConn()
		s := testSession(t, conn, Limits{MaxFramesPerSecond: 10})
		for range 50 {
			conn.in <- []byte{0xff}
		}
		var ev countingEvents
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		s.ev = ev.events()
		go func() { s.run(ctx); close(done) }()
		deadline := time.Now().Add(5 * time.Second)
		for {
			ev.mu.Lock()
			total := ev.drops["rate"] + ev.drops["decode"]
			rate := ev.drops["rate"]
			ev.mu.Unlock()
			if total == 50 {
				if rate < 30 {
					t.Errorf("%d of 50 frames dropped for rate, want most (burst 10)", rate)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d frames handled", total)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
	})
	t.Run("pending requests and timeout", func(t *testing.T) {
		conn := newFakeConn()
		s := testSession(t, conn, Limits{MaxPendingRequests: 2, RequestTimeout: 200 * time.Millisecond})
		var ev countingEvents
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		s.ev = ev.events()
		go func() { s.run(ctx); close(done) }()
		errs := make(chan error, 3)
		for range 2 {
			go func() { _, err := s.lock(ctx); errs <- err }()
		}
		time.Sleep(50 * time.Millisecond) // both are pending
		if _, err := s.lock(ctx); !errors.Is(err, ErrTooManyRequests) {
			t.Errorf("third request: %v, want ErrTooManyRequests", err)
		}
		for range 2 {
			if err := <-errs; err == nil || !strings.Contains(err.Error(), "no response") {
				t.Errorf("unanswered request: %v, want a timeout", err)
			}
		}
		cancel()
		<-done
	})
}

// TestDedupAcrossProxies: a message two proxies deliver is passed on once.
func TestDedupAcrossProxies(t *testing.T) {
	var got int
	c, err := New(Config{Proxies: []string{"ws://a", "ws://b"}, UserID: make([]byte, 20), Dialer: WebSocketDialer{},
		Deliver: func(string, []byte) { got++ }})
	if err != nil {
		t.Fatal(err)
	}
	c.Join(testPart, Subscribe)
	key := testKey(t)
	msgs := signedChain(t, key, testPart, 3, func(i int) string { return `{}` })
	for _, m := range msgs {
		c.deliver(c.proxies[0], testPart, m)
		c.deliver(c.proxies[1], testPart, m)
	}
	if got != 3 {
		t.Fatalf("delivered %d, want 3", got)
	}
	c.Leave(testPart)
	c.deliver(c.proxies[0], testPart, msgs[0])
	if got != 3 {
		t.Fatal("delivered a message of a partition left")
	}
}

func TestConfigErrors(t *testing.T) {
	good := Config{Proxies: []string{"ws://127.0.0.1:1"}, UserID: make([]byte, 20), Dialer: WebSocketDialer{}}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no proxies", func(c *Config) { c.Proxies = nil }, "no proxies"},
		{"http URL", func(c *Config) { c.Proxies = []string{"http://x:1"} }, `scheme "http"`},
		{"path", func(c *Config) { c.Proxies = []string{"ws://x:1/api"} }, "no path"},
		{"twice", func(c *Config) { c.Proxies = []string{"ws://x:1", "ws://x:1"} }, "twice"},
		{"short user", func(c *Config) { c.UserID = []byte{1} }, "userId is 1 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
