package registry

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// BenchmarkAllowedWarm is one permission check answered from the cache:
// the whole cost the StreamRegistry adds to a message's validation while
// the cache is warm (BENCHMARKS.md, issue 17).
func BenchmarkAllowedWarm(b *testing.B) {
	owner := newKey(b)
	chain := newSimChain(b, owner)
	cb := &countingBackend{Backend: chain.backend}
	c, err := New(cb, Config{Address: chain.contract.Hex(), CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	stream, user, at := streamOf(owner, "/none"), owner.PublisherID(), time.Now()
	if _, err := c.Allowed(ctx, stream, user, streamr.PermissionPublish, at); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Allowed(ctx, stream, user, streamr.PermissionPublish, at); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if n := cb.calls.Load(); n != 1 {
		b.Fatalf("%d eth_calls, want 1", n)
	}
}
