package streamrnet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tributary-iot/tributary/streamr/pb"
)

// Protocol constants of Streamr 103.3.1.
const (
	// ProtocolVersion is the DHT protocol version this client speaks; nodes
	// compare only the major part.
	ProtocolVersion  = "1.1"
	handshakeService = "system/handshaker"
	lockService      = "system/connection-manager"
	proxyLockID      = "system/proxy-client"
	// Any type URLs are matched by Streamr on the text after the last '/'.
	typeURLPrefix = "type.googleapis.com/"
)

// Header keys and values of protorpc.RpcMessage.
const (
	hdrMethod       = "method"
	hdrRequest      = "request"
	hdrResponse     = "response"
	hdrNotification = "notification"
)

// deliveryService is the RPC service of one stream partition.
func deliveryService(streamPart string) string { return "stream-part-delivery-" + streamPart }

// streamPartOf returns the stream partition a delivery service names.
func streamPartOf(service string) (string, bool) {
	return strings.CutPrefix(service, "stream-part-delivery-")
}

// newNodeID returns a random 20-byte DHT node ID: a client's identity on
// the network is its userId, the node ID only names the connection.
func newNodeID() []byte {
	id := make([]byte, 20)
	_, _ = rand.Read(id) // crypto/rand.Read never fails on Linux
	return id
}

// clientDescriptor describes a client-only node: no server to connect back to.
func clientDescriptor(nodeID []byte) *pb.PeerDescriptor {
	return &pb.PeerDescriptor{NodeId: nodeID, Type: pb.NodeType_NODEJS}
}

// packAny wraps a message in an Any whose type URL is the proto name, as
// Streamr's protobuf-ts code writes and expects it.
func packAny(m proto.Message) (*anypb.Any, error) {
	value, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: typeURLPrefix + string(m.ProtoReflect().Descriptor().FullName()), Value: value}, nil
}

// rawAny wraps already-encoded bytes of the named message.
func rawAny(name string, value []byte) *anypb.Any {
	return &anypb.Any{TypeUrl: typeURLPrefix + name, Value: value}
}

// unpackAny decodes an Any into m after checking that its type name (the
// text after the last '/') is m's.
func unpackAny(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return errors.New("RPC body is missing")
	}
	want := string(m.ProtoReflect().Descriptor().FullName())
	if got := anyName(a); got != want {
		return fmt.Errorf("RPC body is a %q, want %q", got, want)
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return fmt.Errorf("decode %s: %w", want, err)
	}
	return nil
}

func anyName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	return u[strings.LastIndexByte(u, '/')+1:]
}

// decodeFrame parses one frame as a dht.Message.
func decodeFrame(frame []byte) (*pb.Message, error) {
	var m pb.Message
	if err := proto.Unmarshal(frame, &m); err != nil {
		return nil, fmt.Errorf("decode dht.Message: %w", err)
	}
	if m.GetServiceId() == "" {
		return nil, errors.New("dht.Message without serviceId")
	}
	return &m, nil
}

// envelope builds the dht.Message around an RPC message.
func envelope(service string, src, dst *pb.PeerDescriptor, rpc *pb.RpcMessage) *pb.Message {
	return &pb.Message{
		MessageId:        uuid.NewString(),
		SourceDescriptor: src,
		TargetDescriptor: dst,
		ServiceId:        service,
		Body:             &pb.Message_RpcMessage{RpcMessage: rpc},
	}
}

// requestMessage is an RPC request (or, with notification, a one-way
// notification) of method carrying body.
func requestMessage(method string, body *anypb.Any, notification bool) *pb.RpcMessage {
	h := map[string]string{hdrMethod: method, hdrRequest: hdrRequest}
	if notification {
		h[hdrNotification] = hdrNotification
	}
	return &pb.RpcMessage{Header: h, Body: body, RequestId: uuid.NewString()}
}

// responseMessage answers req with body, or with errType when it is set.
func responseMessage(req *pb.RpcMessage, body *anypb.Any, errType *pb.RpcErrorType, errMsg string) *pb.RpcMessage {
	r := &pb.RpcMessage{
		Header:    map[string]string{hdrMethod: req.GetHeader()[hdrMethod], hdrResponse: hdrResponse},
		Body:      body,
		RequestId: req.GetRequestId(),
		ErrorType: errType,
	}
	if errMsg != "" {
		r.ErrorMessage = &errMsg
	}
	return r
}

func isResponse(r *pb.RpcMessage) bool { _, ok := r.GetHeader()[hdrResponse]; return ok }

func isNotification(r *pb.RpcMessage) bool { _, ok := r.GetHeader()[hdrNotification]; return ok }

// majorVersion is the text before the first '.'.
func majorVersion(v string) string {
	major, _, _ := strings.Cut(v, ".")
	return major
}

func marshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }
