// Package overlay carries signed Streamr messages between gateways over
// go-libp2p. It is the only Tributary package that imports libp2p.
//
// Every stream partition is its own overlay: one GossipSub topic per
// streamr.StreamPartID, joined by every node that publishes or subscribes on
// it, and every member forwards what it receives. There is no broker.
//
// Design choices, and why:
//
//   - libp2p message signing is off (StrictNoSign). Every Streamr message
//     already carries a publisher signature, which each hop checks; libp2p's
//     own Ed25519 signature would cost about 5× the throughput and prove
//     nothing more.
//   - The pubsub message ID is derived from the Streamr message ID (stream
//     part, publisher, chain, timestamp, sequence number) plus the Streamr
//     signature, so re-sent copies of one message die at the first hop while
//     a forgery cannot claim the ID of a genuine message that is yet to come
//     (pubsub marks an ID as seen before validating it).
//   - A topic validator runs at every hop, before forwarding: size, decode,
//     stream part matches the topic, publisher allowed by the local Policy,
//     structure and signature (streamr.Validate), and a timestamp that is
//     not too far in the future. A rejected message costs its sender 20
//     points of GossipSub peer score, squared with each further one (two
//     cost 80, the graylist threshold at which all its traffic is
//     ignored), decaying over 30 minutes. A future timestamp is dropped
//     without penalty: the receiver's clock may be the wrong one.
//   - Delivery order is arrival order: paths through the mesh and parallel
//     validation reorder messages, and bridge/ orders them by chain.
//   - The mesh degree is 4 (Dlo 3, Dhi 6), Streamr's neighbour target per
//     stream partition, so a Raspberry Pi forwards each message to about
//     four peers instead of GossipSub's default six to twelve.
//   - Discovery: configured bootstrap peers, a Kademlia DHT under the
//     "/tributary" protocol prefix in which nodes advertise the topics they
//     carry (pubsub looks up peers for a topic with fewer than Dlo members),
//     and mDNS on the local network.
//
// A Node is the libp2p host with its pubsub router; Join returns a Partition
// to publish on and receive validated messages from.
package overlay
