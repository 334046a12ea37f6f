package overlay

import (
	"strings"
	"testing"
	"time"
)

// TestGossipRetention pins what the gossip layer keeps per message, which
// at 2,000 msg/s decides much of a gateway's live heap: peer-score
// delivery records for the gossip window only (with the seen filter's TTL
// they were 12–15 MB of a receiver's heap), a message cache that keeps what
// it advertises until the next heartbeat, and a seen filter that outlives
// both.
func TestGossipRetention(t *testing.T) {
	if got := peerScoreParams().SeenMsgTTL; got != scoreRecordTTL || got > MinSeenTTL {
		t.Errorf("peer score SeenMsgTTL = %v, want %v (at most the least seen TTL %v)", got, scoreRecordTTL, MinSeenTTL)
	}
	p := gossipSubParams(0)
	if p.HistoryLength != historyLength || p.HistoryGossip != historyGossip || p.HistoryGossip >= p.HistoryLength {
		t.Errorf("gossip history length %d, advertised %d; want %d and %d (an advertised message must stay cached past the next shift)",
			p.HistoryLength, p.HistoryGossip, historyLength, historyGossip)
	}
	if window := time.Duration(p.HistoryLength) * p.HeartbeatInterval; MinSeenTTL < 2*window {
		t.Errorf("least seen TTL %v is below two gossip windows (%v)", MinSeenTTL, 2*window)
	}
}

func TestSeenTTLConfig(t *testing.T) {
	for _, tc := range []struct {
		ttl     time.Duration
		want    time.Duration
		wantErr string
	}{
		{0, DefaultSeenTTL, ""},
		{30 * time.Second, 30 * time.Second, ""},
		{MinSeenTTL, MinSeenTTL, ""},
		{time.Second, 0, "seen_ttl 1s is below 5s"},
		{-time.Second, 0, "seen_ttl -1s is below"},
	} {
		c := Config{SeenTTL: tc.ttl}
		c.setDefaults()
		err := c.validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("SeenTTL %v: %v", tc.ttl, err)
		case tc.wantErr == "" && c.SeenTTL != tc.want:
			t.Errorf("SeenTTL %v: got %v, want %v", tc.ttl, c.SeenTTL, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("SeenTTL %v: error %v, want one containing %q", tc.ttl, err, tc.wantErr)
		}
	}
}
