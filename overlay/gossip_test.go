package overlay

import "testing"

// TestGossipRetention pins what the gossip layer keeps per message, which
// at 2,000 msg/s decides much of a gateway's heap: peer-score delivery
// records as long as seen entries (pubsub's global default of 120 s kept
// four times as many), and a 3-heartbeat message cache.
func TestGossipRetention(t *testing.T) {
	if got := peerScoreParams().SeenMsgTTL; got != seenTTL {
		t.Errorf("peer score SeenMsgTTL = %v, want the seen cache's %v", got, seenTTL)
	}
	p := gossipSubParams(0)
	if p.HistoryLength != historyLength || p.HistoryGossip != historyGossip || p.HistoryGossip > p.HistoryLength {
		t.Errorf("gossip history length %d, advertised %d; want %d and %d", p.HistoryLength, p.HistoryGossip, historyLength, historyGossip)
	}
}
