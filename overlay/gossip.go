package overlay

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Mesh and queue tuning for small gateways. See the package doc for the
// reasoning; the numbers are measured in overlay.md.
const (
	meshD    = 4 // Streamr's neighbour target per stream partition
	meshDlo  = 3 // graft when below
	meshDhi  = 6 // prune when above
	meshDout = 1 // outbound mesh links kept, against eclipse by inbound peers (pubsub requires < D/2)
	gossipD  = 4 // peers that get IHAVE gossip per heartbeat, besides the mesh

	// Queues drop silently when full. At 2,000 msg/s these absorb a 1 s
	// stall (the defaults of 32 dropped messages at 5,000 msg/s in
	// perf-baselines.md §4); they hold pointers, so empty queues cost little.
	peerOutboundQueue = 2048
	validateQueue     = 4096
	subscriptionQueue = 4096

	// The gossip cache: a message is advertised (IHAVE) in the one
	// heartbeat after it arrived and kept for the IWANTs that answer it,
	// until the next heartbeat (pubsub's defaults are 3 and 5). The cache
	// holds every message (its encoded bytes) of the last historyLength
	// seconds, ~4,000 at 2,000 msg/s (2–4 MB of heap); gossip is only the
	// mesh's backup here, and a copy lost for longer is fetched by resend
	// (bridge.Orderer).
	historyGossip = 1
	historyLength = 2

	// MinSeenTTL is the least Config.SeenTTL: a copy can reach a node as
	// long as some peer's cache holds it, historyLength heartbeats after
	// that peer got it, and a peer that got it late relays it late; a few
	// such windows cover every copy gossip still carries.
	MinSeenTTL = 5 * time.Second

	// scoreRecordTTL bounds pubsub's per-message delivery records (peer
	// scoring: which neighbours forwarded a message while it was
	// validated, to penalise the forwarders of an invalid one), ~200 bytes
	// each. pubsub collects expired records once a minute, like the seen
	// filter's IDs, so a gateway holds rate × (TTL + up to 60 s) of each:
	// at 2,000 msg/s a 30 s TTL meant up to 180,000 records, 5 s 130,000.
	// Copies come within the gossip window; a later one is still dropped by
	// the seen filter, only not scored (mesh delivery scoring is off).
	scoreRecordTTL = MinSeenTTL

	// rpcOverhead is room for the RPC envelope around a maximum-size message.
	rpcOverhead = 64 << 10
)

// Peer score thresholds. A peer below gossipThreshold gets no gossip, below
// publishThreshold none of our publishes, below graylistThreshold all its
// RPCs are ignored.
const (
	gossipThreshold             = -10
	publishThreshold            = -50
	graylistThreshold           = -80
	acceptPXThreshold           = 1 // peer exchange only from peers that delivered something
	opportunisticGraftThreshold = 2
	invalidMessageWeight        = -20 // squared counter: 1 invalid → -20, 2 → -80 (graylisted)
)

func gossipSubParams(heartbeat time.Duration) pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dout, p.Dlazy = meshD, meshDlo, meshDhi, meshDout, gossipD
	p.Dscore = 2
	p.HistoryGossip, p.HistoryLength = historyGossip, historyLength
	if heartbeat > 0 {
		p.HeartbeatInterval = heartbeat
	}
	return p
}

func peerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             gossipThreshold,
		PublishThreshold:            publishThreshold,
		GraylistThreshold:           graylistThreshold,
		AcceptPXThreshold:           acceptPXThreshold,
		OpportunisticGraftThreshold: opportunisticGraftThreshold,
	}
}

// peerScoreParams covers the node; each topic adds topicScoreParams when
// joined. IP colocation scoring is off: gateways behind one NAT or CGNAT
// share an address, and since every message is signed a Sybil can only
// waste bandwidth, which invalid-message penalties already punish.
func peerScoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics:                    map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:             20,
		AppSpecificScore:          func(peer.ID) float64 { return 0 },
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               10 * time.Minute, // a penalised peer cannot reconnect to a clean slate
		// Delivery records for the gossip window only (the default is
		// pubsub's global seen TTL, 120 s).
		SeenMsgTTL: scoreRecordTTL,
	}
}

// topicScoreParams rewards time in the mesh and first deliveries a little
// (at most +13) and punishes invalid messages hard. Mesh delivery-rate
// penalties are off: sensor streams are often quiet for minutes, and an
// honest neighbour on a quiet stream must not look like a free rider.
func topicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               0.01,
		TimeInMeshQuantum:              time.Second,
		TimeInMeshCap:                  300,
		FirstMessageDeliveriesWeight:   0.5,
		FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:      20,
		InvalidMessageDeliveriesWeight: invalidMessageWeight,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(30 * time.Minute),
	}
}
