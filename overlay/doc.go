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
//   - A gossip message is a bundle (pb.GossipBundle, bundle.go) of
//     consecutive messages of one PublishBatch: up to 256 and about 32 KiB,
//     the readings a gateway signed together. pubsub keeps bookkeeping per
//     gossip message for a minute or more (its seen filter and its
//     peer-score delivery records, ~400 bytes, swept once a minute: ~55 MB
//     at 2,000 single messages/s) and validates, caches and frames each
//     one; a bundle pays that once. Bundles add no wait: a batch is what
//     the forwarder has at hand.
//   - The pubsub message ID is a hash of the whole bundle, so re-sent
//     copies die at the first hop while a copy with altered content (same
//     Streamr message ID and signature) gets an ID of its own: pubsub marks
//     an ID as seen before validating it and counts later copies of a
//     rejected ID against their senders, so an ID that did not cover the
//     content let a stranger's forgery get the genuine message dropped and
//     its honest forwarders penalised. A peer can repack valid messages
//     into new bundles, each with a new ID; the node remembers the IDs of
//     the 8,192 to 16,384 messages it accepted last, in all its
//     partitions, and drops a repeat (of those, or within its bundle)
//     without verifying it again, counted as a duplicate.
//   - A topic validator runs at every hop, before forwarding, on every
//     message of a bundle: size, decode, stream part matches the topic,
//     publisher allowed by the local Policy, structure and signature
//     (streamr.Validate), and a timestamp that is not too far in the
//     future. One invalid message rejects the whole bundle, and none of
//     its messages is marked seen. A message dropped without penalty (see
//     below) is not delivered here but travels on in its bundle if another
//     of its messages is accepted; a bundle of nothing new is not
//     forwarded. A rejected bundle costs its sender 20
//     points of GossipSub peer score, squared with each further one (two
//     cost 80, the graylist threshold at which all its traffic is
//     ignored), decaying over 30 minutes. A future timestamp is dropped
//     without penalty: the receiver's clock may be the wrong one.
//   - Delivery order is arrival order: paths through the mesh and parallel
//     validation reorder messages, and bridge/ orders them by chain.
//   - Flow control: gossip carries live messages only; backlogs are pulled.
//     GossipSub has no back-pressure: a member that validates more slowly
//     than a neighbour publishes drops what overflows its queues, silently,
//     and recovering the loss by gap fill while the flood goes on is slower
//     than the loss. So a publishing gateway gossips only messages near the
//     head of its log, and of a backlog (after an outage, or a neighbour
//     that was away) only each chain's newest message (bridge.Forwarder).
//     A receiver learns from that message's prevMsgRef what it misses and
//     fetches it over ResendProtocol, whose stream has transport
//     back-pressure: the answering node writes only as fast as the
//     receiver reads, validates and stores, in pages it asks for
//     (max_messages), one publisher's chains in one range. The receiver
//     sets the pace, so a publisher cannot overrun it whatever their speed
//     ratio; the cost is a round trip per page instead of a push. Gossip
//     lost to a live rate above a receiver's capacity is recovered the same
//     way, once the receiver has capacity to spare. On the live path a
//     receiver can shed instead of being overrun (shed_queue_wait or
//     shed_queue_depth; off by default, see below): every gossiped message
//     is stamped when its RPC arrives (the tracer's RecvRPC), and one that
//     waited in pubsub's validation queue longer than ShedQueueWait (e.g.
//     200 ms), or is taken from it while more than ShedQueueDepth others
//     wait (e.g. 1,024), is dropped without being decoded or verified, not
//     forwarded, counted (drops_total{reason="shed"}) and logged once.
//     Shedding costs a map lookup where validating costs ~50 µs of
//     signature check, so the queue drains as soon as it backs up and never
//     reaches its bound (4,096), where pubsub would drop at random and an
//     accepted message would have waited a second or more. Shed messages
//     are marked seen: copies from other paths die as duplicates, and only
//     the pull brings them back.
//     Every loss this node knows of, shed or dropped by pubsub at its full
//     validation queue or at the full queue to our subscriber (the tracer
//     sees both), is noted per partition (Node.LastLoss): a gap that opens
//     after it is asked for by resend after 100 ms
//     (bridge.OrderConfig.LastLoss), not after gap_fill_timeout (5 s), which
//     is meant for reordering. A loss can also take a chain's last messages,
//     which no later message reveals as a gap: after a loss, each chain of
//     the partition that has gone quiet is probed once with an open-ended
//     resend from its last delivered message (bridge.Orderer, tail probes;
//     tributary_order_tail_probes_total). A lost message is fetched once for every
//     orderer of the partition (MQTT delivery and storing see the same
//     gossip and the same gaps): they share one bridge.FillShare, which
//     keeps what a fetch brought until the others took it. A gap is asked for by a
//     range of its own chain; only when every chain of a publisher has one
//     (a backlog) does one range span them all.
//     A loss only the sender sees is pubsub's drop of an RPC whose queue
//     to a peer is full (peerOutboundQueue, 2,048; the tracer's DropRPC,
//     drops_total{reason="send_queue_full"}). A gap it leaves shows at
//     the peer with the chain's next message, but the last message of a
//     chain whose publisher then goes quiet would be lost for good. So
//     each Partition keeps the newest message (its encoded bytes, by
//     chain position) of each (publisher, msgChainID) it published or
//     accepted, up to ReannounceChains (2,048; the least recently updated
//     goes), and notes each send loss. Once the partition has lost none
//     for longer than SeenTTL plus a second, it publishes again, once,
//     each in a bundle of its own, the tips stored from 2 s before the first loss of that episode to
//     its last (only a message sent then can have been dropped: pubsub
//     drops when it enqueues; a tip stored later went out after the last
//     loss, or that loss would be later), counted in
//     tributary_overlay_reannounced_total and logged at info at most once
//     per LogRepeatInterval. A peer that has the message drops the copy
//     (a duplicate within its seen TTL, else stale by chain position in
//     the bridge's Orderer); one that lost it gets the tip, and its
//     prevMsgRef shows any earlier gap, which the Orderer fills by resend.
//     A re-announce dropped again opens a new episode. A tip that went out
//     in a bundle with others gets a new gossip ID in its bundle of one;
//     one that went out alone gets the same, and pubsub publishes nothing
//     for an ID it still holds as delivered, sweeping expired IDs only
//     once a minute: such a tip (our validator never sees it) is tried
//     again every 5 s until the sweep lets it through, so the tail reaches
//     the peer SeenTTL + 1 s to about a minute after the losses end. Why
//     not push to the peer that lost it, whom DropRPC names: gossip has no
//     such path, and a resend push would be a new protocol.
//     Remembering a tip costs a map lookup under a mutex on the validator
//     path, no allocation for a known chain; the drop path a mutex.
//     Why shedding is off by default: a shed message is not saved work, it
//     is deferred work. It is still verified once fetched, and the fetch
//     costs the publisher a store lookup and both sides a stream; queueing
//     costs nothing but latency. On a receiver that is starved of CPU for
//     moments (shared cores) rather than overrun, its queue backs up past
//     either mark at a modest rate, and shedding turned those moments into
//     resend work that made throughput and the e2e tail worse than main's
//     rare overflow drops, which are now fetched at once too (BENCHMARKS.md,
//     Session 8 — gapshare). Turn it on for a receiver that a publisher
//     can outrun for good (much slower hardware, a CPU quota): there it
//     keeps the validation queue from overflowing
//     (TestLiveOverrunSlowReceiver).
//     Receipts were the other
//     candidate (pace the forwarder by its neighbours' acknowledgements),
//     but a mesh relays through nodes that hold no positions, and a window
//     held by the slowest neighbour would slow every other one down.
//   - Reconnecting: lost bootstrap peers and partition members are redialled
//     on disconnection with exponential backoff (200 ms up to
//     RedialInterval; members after 1 s, so that a restarted node, which
//     dials its bootstrap peers at once, is not dialled back at the same
//     moment). A closing node stops pubsub before leaving its topics, so it
//     sends no PRUNE: a PRUNE makes the peer refuse our GRAFTs for the
//     backoff period (a minute), which kept a gateway restarted within that
//     minute out of the mesh. pubsub forgets a peer's subscriptions when a
//     duplicate connection to it closes, and the peer never resends them;
//     such a peer (connected, in the mesh or a member before, but not
//     listed) is disconnected and redialled so both sides exchange
//     subscriptions again (counted in tributary_overlay_resyncs_total).
//   - The peer and neighbour gauges are recomputed every second from
//     ListPeers and from the mesh as traced (GRAFT, PRUNE, closed streams),
//     not counted from peer events, which pubsub coalesces.
//   - Publishing checks each message's size, encoding and topic, and its
//     signature on one message in 64 (and the first of each partition): the
//     messages come from this node's own signer and store, every receiver
//     verifies them, and a full check costs as much as the signing did.
//   - The mesh degree is 4 (Dlo 3, Dhi 6), Streamr's neighbour target per
//     stream partition, so a Raspberry Pi forwards each message to about
//     four peers instead of GossipSub's default six to twelve.
//   - Hostile peers: pubsub tracks only subscriptions to topics of our
//     naming scheme, at most MaxPeerTopics per peer (joined topics always);
//     the resource manager limits connections per address and subnet,
//     loopback included, and lets bootstrap and ProtectedPeers in even with
//     every slot taken (allowlist; never trimmed); resend answers are shared
//     out per peer, with a reserve for gap fills of partitions this node
//     publishes on. Each refusal is counted in
//     tributary_overlay_refused_total{rule} and logged once per
//     LogRepeatInterval. As a client a node keeps to the share it grants:
//     it has at most MaxStreamsPerPeer requests open to one peer, and more
//     wait for an answer to end, rather than be refused (a gateway's two
//     orderers keep up to 8 fills in flight), for at most PeerTimeout: a
//     peer whose answers hold our slots that long counts as busy, and the
//     next peer is asked. A peer that is busy anyway (serving others) is
//     asked again after a jittered pause, 50 ms doubling to 1.6 s, when no
//     other peer answered: a refused gap fill used to wait resend_retry
//     (5 s), stalling its chains at high load.
//   - Discovery: configured bootstrap peers, a Kademlia DHT under the
//     "/tributary" protocol prefix in which nodes advertise the topics they
//     carry (pubsub looks up peers for a topic with fewer than Dlo members),
//     and mDNS on the local network.
//
// A Node is the libp2p host with its pubsub router; Join returns a Partition
// to publish on and receive validated messages from.
package overlay
