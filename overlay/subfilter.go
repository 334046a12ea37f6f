package overlay

import (
	"strings"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/tributary-iot/tributary/streamr"
)

// maxTopicBytes bounds a topic name: the prefix and a stream part ID of
// a stream ID as long as an MQTT topic may be (512 B) and its partition.
const maxTopicBytes = len(topicPrefix) + 512 + len("#99")

// subscriptionFilter decides which subscriptions of other peers pubsub
// tracks. pubsub keeps every topic a peer announces, forever while it is
// connected, so without it one connection announcing 600,000 topics grew
// the heap by 236 MB. It keeps only topics of our naming scheme (a stream
// part this node carries or could join), at most max per peer, always
// including the topics this node joined; of an RPC that announces more
// than max it keeps only the joined topics. Its methods run on pubsub's
// event loop.
type subscriptionFilter struct {
	max     int
	joined  func(topic string) bool
	refused *refusals

	mu    sync.Mutex
	peers map[peer.ID]map[string]struct{} // tracked subscriptions of topics not joined
}

var _ pubsub.SubscriptionFilter = (*subscriptionFilter)(nil)

func newSubscriptionFilter(max int, joined func(string) bool, refused *refusals) *subscriptionFilter {
	return &subscriptionFilter{max: max, joined: joined, refused: refused, peers: make(map[peer.ID]map[string]struct{})}
}

// CanSubscribe reports whether topic follows the /tributary/2/<stream
// part> scheme.
func (f *subscriptionFilter) CanSubscribe(topic string) bool {
	part, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok || len(topic) > maxTopicBytes {
		return false
	}
	_, err := streamr.ParseStreamPartID(part)
	return err == nil
}

// FilterIncomingSubscriptions returns the subscriptions of an RPC that
// pubsub may track.
func (f *subscriptionFilter) FilterIncomingSubscriptions(from peer.ID, subs []*pb.RPC_SubOpts) ([]*pb.RPC_SubOpts, error) {
	if len(subs) > f.max {
		return f.joinedOnly(from, subs), nil
	}
	subs = pubsub.FilterSubscriptions(subs, func(string) bool { return true }) // deduplicated
	f.mu.Lock()
	defer f.mu.Unlock()
	held := f.peers[from]
	out := subs[:0]
	badName, overCap := 0, 0
	for _, s := range subs {
		topic := s.GetTopicid()
		switch {
		case !f.CanSubscribe(topic):
			badName++
		case f.joined(topic):
			out = append(out, s)
		case !s.GetSubscribe():
			delete(held, topic)
			out = append(out, s)
		case len(held) >= f.max:
			if _, ok := held[topic]; ok {
				out = append(out, s)
			} else {
				overCap++
			}
		default:
			if held == nil {
				held = make(map[string]struct{})
				f.peers[from] = held
			}
			held[topic] = struct{}{}
			out = append(out, s)
		}
	}
	f.report(from, badName, overCap)
	return out, nil
}

// joinedOnly keeps, of an RPC announcing more subscriptions than a peer
// may hold, those of topics this node joined: a peer carrying that many
// partitions still meshes with us on ours.
func (f *subscriptionFilter) joinedOnly(from peer.ID, subs []*pb.RPC_SubOpts) []*pb.RPC_SubOpts {
	var out []*pb.RPC_SubOpts
	for _, s := range subs {
		if f.joined(s.GetTopicid()) {
			out = append(out, s)
		}
	}
	f.refused.refuse(ruleTopicsPerRPC, len(subs)-len(out), "peer announced more subscriptions at once than max_peer_topics: only those of joined topics kept",
		"peer", from.String(), "subscriptions", len(subs), "max_peer_topics", f.max)
	return pubsub.FilterSubscriptions(out, func(string) bool { return true })
}

func (f *subscriptionFilter) report(from peer.ID, badName, overCap int) {
	if badName > 0 {
		f.refused.refuse(ruleTopicName, badName, "peer subscribed to topics outside the overlay's naming scheme: ignored",
			"peer", from.String(), "topics", badName)
	}
	if overCap > 0 {
		f.refused.refuse(ruleTopicsPerPeer, overCap, "peer subscribed to more topics than max_peer_topics: ignored",
			"peer", from.String(), "topics", overCap, "max_peer_topics", f.max)
	}
}

// forget drops a peer's tracked subscriptions once pubsub dropped the
// peer.
func (f *subscriptionFilter) forget(id peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.peers, id)
}

// tracked returns how many subscriptions of topics not joined are tracked
// for id.
func (f *subscriptionFilter) tracked(id peer.ID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.peers[id])
}
