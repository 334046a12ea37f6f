package overlay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

func TestValidatorCheck(t *testing.T) {
	owner := newPublisher(t)
	stranger := newPublisher(t)
	listed := newPublisher(t)
	part := owner.part(t, 3)
	now := time.UnixMilli(1_800_000_000_000)
	ts := now.UnixMilli()

	tampered := message(t, owner.key, part, owner.chain, ts, 0)
	tampered.Content().Content = []byte(`{"temp":99}`)
	unsigned := message(t, owner.key, part, owner.chain, ts, 0)
	unsigned.SignatureType = streamr.SignatureLegacy
	badJSON := message(t, owner.key, part, owner.chain, ts, 0)
	badJSON.Content().Content = []byte(`{"temp":`)
	if err := streamr.SignMessage(t.Context(), owner.key, badJSON); err != nil {
		t.Fatal(err)
	}
	big := message(t, owner.key, part, owner.chain, ts, 0)
	big.Content().Content = make([]byte, 5000)
	big.Content().ContentType = streamr.ContentBinary
	if err := streamr.SignMessage(t.Context(), owner.key, big); err != nil {
		t.Fatal(err)
	}

	keyRequest := func(to *publisher) []byte {
		m := &streamr.StreamMessage{
			ID:   streamr.MessageID{StreamID: part.Stream, StreamPartition: int32(part.Partition), Timestamp: ts, MsgChainID: "k"},
			Body: &streamr.GroupKeyRequest{RequestID: "r", RecipientID: to.key.PublisherID(), PublicKey: []byte("pk"), GroupKeyIDs: []string{"g"}},
		}
		if err := streamr.SignMessage(t.Context(), stranger.key, m); err != nil {
			t.Fatal(err)
		}
		return encode(t, m)
	}

	tests := []struct {
		name    string
		data    []byte
		verdict verdict
		reason  string
	}{
		{"owner", owner.signed(t, part, ts, 0), accept, ""},
		{"listed publisher", encode(t, message(t, listed.key, part, "c", ts, 0)), accept, ""},
		{"old timestamp", owner.signed(t, part, 1, 0), accept, ""},
		{"within skew", owner.signed(t, part, ts+int64(time.Minute/time.Millisecond), 0), accept, ""},
		{"future", owner.signed(t, part, ts+int64(2*time.Minute/time.Millisecond), 0), ignore, reasonFuture},
		{"oversized", encode(t, big), reject, reasonSize},
		{"garbage", []byte{0xff, 0xff, 0xff}, reject, reasonDecode},
		{"empty", nil, reject, reasonDecode},
		{"other partition", owner.signed(t, owner.part(t, 4), ts, 0), reject, reasonTopic},
		{"other stream", stranger.signed(t, stranger.part(t, 3), ts, 0), reject, reasonTopic},
		{"stranger on owner's stream", encode(t, message(t, stranger.key, part, "c", ts, 0)), reject, reasonPublisher},
		{"stranger's key request to the owner", keyRequest(owner), accept, ""},
		{"stranger's key request to a non-publisher", keyRequest(stranger), reject, reasonPublisher},
		{"tampered content", encode(t, tampered), reject, reasonSignature},
		{"legacy signature type", encode(t, unsigned), reject, reasonSignature},
		{"signed invalid JSON", encode(t, badJSON), reject, reasonMalformed},
	}
	v := &validator{
		part:    part,
		limits:  streamr.Limits{MaxMessageBytes: 4096},
		maxSkew: time.Minute,
		policy:  AllowList{owner.stream: {listed.key.PublisherID()}},
		now:     func() time.Time { return now },
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, verdict, reason, err := v.check(tc.data)
			if verdict != tc.verdict || reason != tc.reason {
				t.Fatalf("check = (%v, %q, %v), want (%v, %q)", verdict, reason, err, tc.verdict, tc.reason)
			}
			if tc.verdict == accept {
				if err != nil || m == nil {
					t.Fatalf("accepted with err %v, message %v", err, m)
				}
				return
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("err = %v, want ErrInvalidMessage", err)
			}
		})
	}
}

func TestAllowList(t *testing.T) {
	owner := newPublisher(t)
	other := newPublisher(t)
	ens := streamr.StreamID("sensors.eth/room1")
	list, err := ParseAllowList(map[string][]string{
		string(ens): {streamr.UserID(other.key.PublisherID())},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		stream    streamr.StreamID
		publisher []byte
		want      bool
	}{
		{"owner of 0x stream", owner.stream, owner.key.PublisherID(), true},
		{"stranger on 0x stream", owner.stream, other.key.PublisherID(), false},
		{"listed on ENS stream", ens, other.key.PublisherID(), true},
		{"unlisted on ENS stream", ens, owner.key.PublisherID(), false},
		{"empty publisher", owner.stream, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := list.MayPublish(tc.stream, tc.publisher); got != tc.want {
				t.Errorf("MayPublish = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseAllowListErrors(t *testing.T) {
	tests := []struct {
		name string
		in   map[string][]string
	}{
		{"bad stream", map[string][]string{"nopath": {"0x" + "11223344556677889900aabbccddeeff00112233"}}},
		{"bad hex", map[string][]string{"x.eth/a": {"0xzz"}}},
		{"wrong length", map[string][]string{"x.eth/a": {"0x1122"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseAllowList(tc.in); err == nil {
				t.Fatal("ParseAllowList accepted bad input")
			}
		})
	}
}

// timedPolicy allows publishers until their expiry (ms); unknown ones
// fail with err when it is set.
type timedPolicy struct {
	until map[string]int64
	err   error
	asked int
}

func (p *timedPolicy) MayPublish(streamr.StreamID, []byte) bool { return false } // never used for a TimedPolicy

func (p *timedPolicy) MayPublishAt(_ context.Context, _ streamr.StreamID, pub []byte, at time.Time) (bool, error) {
	p.asked++
	until, ok := p.until[string(pub)]
	if !ok && p.err != nil {
		return false, p.err
	}
	return ok && at.UnixMilli() < until, nil
}

// TestValidatorTimedPolicy: a TimedPolicy (the StreamRegistry) judges at
// the message's timestamp, only after the signature verified; when it
// refuses or cannot decide, the message is ignored, not rejected (no
// penalty for the relay).
func TestValidatorTimedPolicy(t *testing.T) {
	owner, granted, unknown := newPublisher(t), newPublisher(t), newPublisher(t)
	part := owner.part(t, 0)
	now := time.UnixMilli(1_800_000_000_000)
	ts := now.UnixMilli()
	policy := &timedPolicy{until: map[string]int64{string(granted.key.PublisherID()): ts}, err: errors.New("chain down")}
	v := &validator{part: part, limits: streamr.Limits{MaxMessageBytes: 4096}, maxSkew: time.Minute, policy: policy,
		now: func() time.Time { return now }}
	tampered := message(t, granted.key, part, "c", ts-1, 0)
	tampered.Content().Content = []byte(`{"x":2}`)
	tests := []struct {
		name    string
		data    []byte
		verdict verdict
		reason  string
		asks    int
	}{
		{"granted, before expiry", encode(t, message(t, granted.key, part, "c", ts-1, 0)), accept, "", 1},
		{"granted, at expiry", encode(t, message(t, granted.key, part, "c", ts, 0)), ignore, reasonPublisher, 1},
		{"owner, chain down: the owner is no exception", owner.signed(t, part, ts-1, 0), ignore, reasonUnreachable, 1},
		{"unknown, chain down", encode(t, message(t, unknown.key, part, "c", ts-1, 0)), ignore, reasonUnreachable, 1},
		{"forged signature: no look-up", encode(t, tampered), reject, reasonSignature, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			policy.asked = 0
			_, verdict, reason, err := v.check(tc.data)
			if verdict != tc.verdict || reason != tc.reason || policy.asked != tc.asks {
				t.Fatalf("check = (%v, %q, %v) after %d look-ups, want (%v, %q) after %d", verdict, reason, err, policy.asked, tc.verdict, tc.reason, tc.asks)
			}
		})
	}
}
