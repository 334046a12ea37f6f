// Package appapi serves the Streamr node's app interfaces from a gateway:
// the HTTP publish endpoint and the WebSocket publish and subscribe
// endpoints, authenticated with the node's API keys. Apps written against
// a Streamr node's plugins work against it unchanged.
//
// Every reading an app publishes goes through the gateway's one durable
// pipeline (bridge.Pipeline.IngestDirect): stored before it is
// acknowledged, signed with the gateway's key in a chain of its own per
// connection, forwarded like an MQTT reading. A subscriber reads what the
// gateway holds for the stream partition (its own readings and, through
// the ordered storage path, what it stores for [[subscribe]] and [[store]]),
// from a position in storage if it asks, then live, in one order with no
// gap or duplicate at the switch.
package appapi
