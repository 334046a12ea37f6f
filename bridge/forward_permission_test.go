package bridge

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// fakePermissions grants Publish per stream; down makes it undecidable.
type fakePermissions struct {
	mu      sync.Mutex
	publish map[string]bool
	down    bool
}

func (p *fakePermissions) Allowed(_ context.Context, stream string, _ []byte, perm streamr.Permission, _ time.Time) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false, errors.New("chain unreachable")
	}
	return perm == streamr.PermissionPublish && p.publish[stream], nil
}

func (p *fakePermissions) set(stream string, ok, down bool) {
	p.mu.Lock()
	p.publish[stream], p.down = ok, down
	p.mu.Unlock()
}

// TestForwarderNeedsPublishPermission: without Publish permission a
// partition's messages stay in storage, counted, while a permitted one
// flows; once granted they all go out in order, and a registry that
// cannot be asked holds them back too.
func TestForwarderNeedsPublishPermission(t *testing.T) {
	s := openStore(t, t.TempDir())
	denied := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/denied"}
	allowed := streamr.StreamPartID{Stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/allowed"}
	o := &fakeOverlay{everyone: true, got: map[streamr.StreamPartID][]int32{}}
	perms := &fakePermissions{publish: map[string]bool{string(allowed.Stream): true}}
	reg := prometheus.NewRegistry()
	f, stop := startForwarder(t, s, o, ForwardConfig{Permissions: perms, Publisher: make([]byte, 20), Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	defer stop()
	storeMessages(t, s, denied, 5)
	storeMessages(t, s, allowed, 5)
	f.Notify()
	if got := waitPublished(t, o, allowed, 5); len(got) != 5 {
		t.Fatalf("permitted partition got %d of 5", len(got))
	}
	time.Sleep(50 * time.Millisecond) // passes go by
	if got := o.published(denied); len(got) != 0 {
		t.Fatalf("%d messages published without Publish permission", len(got))
	}
	if n := testutil.ToFloat64(f.denied.WithLabelValues("denied")); n == 0 {
		t.Error("refusals not counted")
	}
	if !f.HoldingBack() {
		t.Error("the forwarder does not report messages held back")
	}

	perms.set(string(denied.Stream), true, false)
	if got := waitPublished(t, o, denied, 5); len(got) != 5 || got[0] != 0 || got[4] != 4 {
		t.Fatalf("after the grant: published %v, want 0..4 in order", got)
	}

	perms.set(string(denied.Stream), true, true)
	storeMessages(t, s, denied, 1)
	f.Notify()
	time.Sleep(50 * time.Millisecond)
	if got := o.published(denied); len(got) != 5 {
		t.Fatalf("published %d messages while the registry was unreachable, want the 5 from before", len(got))
	}
	if n := testutil.ToFloat64(f.denied.WithLabelValues("unreachable")); n == 0 {
		t.Error("unreachable refusals not counted")
	}
}
