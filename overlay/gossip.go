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

	// The gossip cache: a message is advertised (IHAVE) for
	// historyGossip heartbeats and kept for IWANTs for historyLength
	// (pubsub's defaults are 3 and 5). It holds every message of the last
	// historyLength seconds, 6,000 at 2,000 msg/s instead of 10,000; a
	// copy lost for longer is fetched by resend (bridge.Orderer).
	historyGossip = 2
	historyLength = 3

	// seenTTL bounds the duplicate filter. Gossip advertises a message for
	// 2 heartbeats and keeps it 3, so 30 s catches late copies while the
	// cache holds at most 60,000 20-byte IDs at 2,000 msg/s (the default
	// 120 s cost tens of MB in perf-baselines.md §2).
	seenTTL = 30 * time.Second

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
		// A delivery record lives as long as the message's seen entry: the
		// default (pubsub's global 120 s) kept 240,000 records alive at
		// 2,000 msg/s, about 15 MB of a 48 MiB heap.
		SeenMsgTTL: seenTTL,
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
