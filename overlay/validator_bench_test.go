package overlay

import (
	"bytes"
	"context"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	ethereum "github.com/ethereum/go-ethereum"

	"github.com/tributary-iot/tributary/registry"
	"github.com/tributary-iot/tributary/streamr"
)

// chainPolicy is the StreamRegistry as the gateway plugs it in.
type chainPolicy struct{ c *registry.Client }

func (p chainPolicy) MayPublish(streamr.StreamID, []byte) bool { return false }

func (p chainPolicy) MayPublishAt(ctx context.Context, s streamr.StreamID, pub []byte, at time.Time) (bool, error) {
	return p.c.Allowed(ctx, string(s), pub, streamr.PermissionPublish, at)
}

// publishOnlyChain answers every getPermissionsForUserId with "Publish
// forever" (the ABI words of the Permission tuple) and counts the calls;
// the rest of registry.Backend is never used by a warm cache.
type publishOnlyChain struct {
	registry.Backend
	calls atomic.Int64
}

func (c *publishOnlyChain) CallContract(context.Context, ethereum.CallMsg, *big.Int) ([]byte, error) {
	c.calls.Add(1)
	words := make([]byte, 5*32) // canEdit, canDelete, publishExpiration, subscribeExpiration, canGrant
	copy(words[2*32:3*32], bytes.Repeat([]byte{0xff}, 32))
	return words, nil
}

// BenchmarkValidate is the validation of one gossiped message (decode,
// policy, signature), each loop once per policy, with the publisher listed in [[overlay.publishers]]
// (registry off) and allowed by the StreamRegistry client with its cache
// warm (one eth_call before the timed loop, none in it). BENCHMARKS.md
// (issue 17) records the ratio.
func BenchmarkValidate(b *testing.B) {
	owner, pub := newPublisher(b), newPublisher(b)
	chain := &publishOnlyChain{}
	client, err := registry.New(chain, registry.Config{Address: registry.PolygonStreamRegistry, CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	part := owner.part(b, 0)
	now := time.Now()
	data := encode(b, message(b, pub.key, part, "c", now.UnixMilli(), 0))
	policies := []struct {
		name   string
		policy Policy
	}{
		{"registry=off", AllowList{owner.stream: {pub.key.PublisherID()}}},
		{"registry=warm", chainPolicy{client}},
	}
	vs := make([]*validator, len(policies))
	for i, p := range policies {
		vs[i] = &validator{part: part, limits: streamr.Limits{MaxMessageBytes: 1 << 20}, maxSkew: time.Minute, policy: p.policy, now: func() time.Time { return now }}
		if _, verdict, reason, err := vs[i].check(data); verdict != accept { // warms the cache
			b.Fatalf("%s: %v %s %v", p.name, verdict, reason, err)
		}
	}
	// The two alternate within one loop, so both see the same machine:
	// on a shared host, separate sub-benchmarks measure different loads.
	spent := make([]time.Duration, len(vs))
	b.ReportAllocs()
	for b.Loop() {
		for i, v := range vs {
			start := time.Now()
			if _, verdict, _, _ := v.check(data); verdict != accept {
				b.Fatalf("%s refused", policies[i].name)
			}
			spent[i] += time.Since(start)
		}
	}
	for i, p := range policies {
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(b.N), p.name+"-ns/op")
	}
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "warm/off")
	if n := chain.calls.Load(); n != 1 {
		b.Fatalf("%d eth_calls, want the 1 that warmed the cache", n)
	}
}

// BenchmarkTipNote is what remembering a chain's tip adds to the
// validation of each accepted message (BenchmarkValidate): a known chain,
// updated in place.
func BenchmarkTipNote(b *testing.B) {
	pub := newPublisher(b)
	part := pub.part(b, 0)
	m := message(b, pub.key, part, pub.chain, time.Now().UnixMilli(), 0)
	data := encode(b, m)
	s := newTipStore(DefaultReannounceChains)
	b.ReportAllocs()
	for b.Loop() {
		s.note(m, data, time.Now().UnixNano())
	}
}
