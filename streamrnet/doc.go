// Package streamrnet is a native client of the Streamr Network (the
// protocol of Streamr's trackerless network, release 103.3.1): it connects
// to Streamr nodes that accept proxy connections and publishes and
// subscribes stream partitions through them, the way the Streamr SDK's
// light clients do, without Node.js.
//
// The wire, bottom up: one WebSocket binary frame carries one dht.Message
// (Streamr's DhtRpc.proto); a connection opens with a handshake on
// service "system/handshaker"; everything after it is protorpc.RpcMessage
// requests, responses and notifications addressed to a service (for a
// stream partition "stream-part-delivery-<streamPartId>"). A proxy
// connection is one requestConnection per stream partition (direction
// PUBLISH or SUBSCRIBE, userId the gateway's address), a connection lock
// so the node keeps the idle connection, sendStreamMessage notifications
// both ways, and leaveStreamPartNotice on leaving.
//
// Everything a remote node sends is bounded: frame size, frames per
// second, outstanding requests, and the de-duplication window across
// proxies. Signatures are not checked here (neither does Streamr's
// network layer): the receiver of Deliver validates.
package streamrnet
