package streamrnet

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tributary-iot/tributary/streamr/pb"
)

func seedFrames(f *testing.F) {
	body, _ := packAny(&pb.LockRequest{LockId: "x"})
	f.Add(rpcFrame(f, lockService, requestMessage("lockRequest", body, false)))
	f.Add(rpcFrame(f, lockService, requestMessage("gracefulDisconnect", body, false)))
	f.Add(rpcFrame(f, "layer0", requestMessage("routeRequest", body, false)))
	f.Add(rpcFrame(f, deliveryService("0xab/x#0"), requestMessage("sendStreamMessage", rawAny("StreamMessage", []byte{10, 2, 10, 0}), true)))
	leave, _ := packAny(&pb.LeaveStreamPartNotice{StreamPartId: "0xab/x#0"})
	f.Add(rpcFrame(f, deliveryService("0xab/x#0"), requestMessage("leaveStreamPartNotice", leave, true)))
	f.Add(rpcFrame(f, lockService, &pb.RpcMessage{Header: map[string]string{hdrResponse: hdrResponse}, RequestId: "nobody"}))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
}

// FuzzSessionFrame: any frame a node sends is answered with at most one
// frame, which is a response, and never panics the read loop.
func FuzzSessionFrame(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		conn := newFakeConn()
		s := testSession(t, conn, Limits{})
		var ev countingEvents
		s.ev = ev.events()
		s.handleFrame(context.Background(), frame)
		out := conn.written()
		if len(out) > 1 {
			t.Fatalf("one frame answered with %d", len(out))
		}
		for _, w := range out {
			var m pb.Message
			if err := proto.Unmarshal(w, &m); err != nil {
				t.Fatalf("answer does not decode: %v", err)
			}
			if r := m.GetRpcMessage(); r == nil || !isResponse(r) {
				t.Fatalf("answer is not an RPC response: %v", &m)
			}
		}
	})
}

// FuzzHandshakeResponse: whatever a node answers to the handshake, the
// client gets a session naming the node or an error.
func FuzzHandshakeResponse(f *testing.F) {
	ok := &pb.Message{MessageId: "h", ServiceId: handshakeService, Body: &pb.Message_HandshakeResponse{
		HandshakeResponse: &pb.HandshakeResponse{SourcePeerDescriptor: &pb.PeerDescriptor{NodeId: []byte{1}}, ProtocolVersion: "1.1"}}}
	b, _ := proto.Marshal(ok)
	f.Add(b)
	e := pb.HandshakeError_DUPLICATE_CONNECTION
	ok.GetHandshakeResponse().Error = &e
	b, _ = proto.Marshal(ok)
	f.Add(b)
	f.Add([]byte("\x22\x00"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		conn := newFakeConn(frame)
		conn.Close() // after the frame: EOF
		lim := Limits{}.withDefaults()
		s, err := handshake(context.Background(), conn, "ws://fake", clientDescriptor(newNodeID()), lim, ProtocolVersion)
		if err == nil && len(s.remote.GetNodeId()) == 0 {
			t.Fatal("session without the node's ID")
		}
	})
}

// FuzzUnpackAny: RPC bodies of any type URL and bytes decode or fail.
func FuzzUnpackAny(f *testing.F) {
	f.Add("type.googleapis.com/ProxyConnectionResponse", []byte{8, 1})
	f.Add("ProxyConnectionResponse", []byte{0xff})
	f.Fuzz(func(t *testing.T, url string, value []byte) {
		var resp pb.ProxyConnectionResponse
		_ = unpackAny(&anypb.Any{TypeUrl: url, Value: value}, &resp)
	})
}
