package registry

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"

	"github.com/tributary-iot/tributary/streamr"
)

func streamOf(k *streamr.EVMKey, path string) string {
	return strings.ToLower(common.Address(k.Address()).Hex()) + path
}

// fixture is a simulated chain with a stream of owner's.
type fixture struct {
	chain  *simChain
	owner  *streamr.EVMKey
	stream string
	client *Client
}

func newFixture(t *testing.T, cfg Config, backend func(Backend) Backend) *fixture {
	t.Helper()
	owner := newKey(t)
	chain := newSimChain(t, owner)
	cfg.Address = chain.contract.Hex()
	var b Backend = chain.backend
	if backend != nil {
		b = backend(b)
	}
	c, err := New(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{chain: chain, owner: owner, stream: streamOf(owner, "/sensors"), client: c}
	f.transact(t, "createStream", "/sensors", `{"partitions":3}`)
	return f
}

// transact sends a transaction signed by the owner through a client
// without a cache of its own.
func (f *fixture) transact(t *testing.T, method string, args ...any) {
	t.Helper()
	c, err := New(f.chain.backend, Config{Address: f.chain.contract.Hex()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Transact(ctx, f.owner, method, args...); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

func (f *fixture) allowed(t *testing.T, user []byte, p streamr.Permission, at time.Time) bool {
	t.Helper()
	ok, err := f.client.Allowed(context.Background(), f.stream, user, p, at)
	if err != nil {
		t.Fatalf("Allowed(%x, %s): %v", user, p, err)
	}
	return ok
}

// TestAllowedOnSimulatedChain walks the semantics the gateway relies on:
// owner, direct grants for addresses and P-256 IDs, public permissions,
// expirations, revocation and unknown streams.
func TestAllowedOnSimulatedChain(t *testing.T) {
	f := newFixture(t, Config{CacheTTL: time.Nanosecond}, nil) // every look-up asks the chain
	ctx := context.Background()
	now := time.Now()
	gw, p256 := newKey(t), mustP256(t)
	gwAddr := common.Address(gw.Address())

	if !f.allowed(t, f.owner.PublisherID(), streamr.PermissionPublish, now) || !f.allowed(t, f.owner.PublisherID(), streamr.PermissionGrant, now) {
		t.Fatal("the creator lacks its permissions")
	}
	if f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) {
		t.Fatal("a stranger may publish")
	}
	f.transact(t, "grantPermission", f.stream, gwAddr, uint8(streamr.PermissionPublish))
	if !f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) || f.allowed(t, gw.PublisherID(), streamr.PermissionSubscribe, now) {
		t.Fatal("granted Publish is not exactly Publish")
	}
	f.transact(t, "grantPermissionForUserId", f.stream, p256, uint8(streamr.PermissionSubscribe))
	if !f.allowed(t, p256, streamr.PermissionSubscribe, now) || f.allowed(t, p256, streamr.PermissionPublish, now) {
		t.Fatal("a P-256 user's Subscribe grant is not exactly Subscribe")
	}
	f.transact(t, "revokePermission", f.stream, gwAddr, uint8(streamr.PermissionPublish))
	if f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) {
		t.Fatal("revoked Publish still allowed")
	}

	expiry := now.Add(time.Hour).Unix()
	f.transact(t, "setExpirationTime", f.stream, gwAddr, uint8(streamr.PermissionPublish), bigOf(expiry))
	if !f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, time.Unix(expiry-1, 0)) {
		t.Fatal("Publish refused before its expiration")
	}
	if f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, time.Unix(expiry, 0)) {
		t.Fatal("Publish allowed at its expiration")
	}

	f.transact(t, "grantPublicPermission", f.stream, uint8(streamr.PermissionPublish))
	stranger := newKey(t)
	if !f.allowed(t, stranger.PublisherID(), streamr.PermissionPublish, now) || !f.allowed(t, mustP256(t), streamr.PermissionPublish, now) {
		t.Fatal("public Publish does not reach every user")
	}
	if has, err := f.client.HasPermission(ctx, f.stream, common.Address(stranger.Address()), streamr.PermissionPublish); err != nil || !has {
		t.Fatalf("hasPermission with public Publish = %v, %v", has, err)
	}

	ok, err := f.client.Allowed(ctx, f.stream+"-missing", f.owner.PublisherID(), streamr.PermissionPublish, now)
	if ok || err != nil {
		t.Fatalf("unknown stream: Allowed = %v, %v; want false, nil", ok, err)
	}
	if _, err := f.client.Permissions(ctx, f.stream+"-missing", f.owner.PublisherID()); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("Permissions of an unknown stream: %v, want ErrStreamNotFound", err)
	}
	if ex, err := f.client.Exists(ctx, f.stream); err != nil || !ex {
		t.Fatalf("exists = %v, %v", ex, err)
	}
	if md, err := f.client.Metadata(ctx, f.stream); err != nil || md != `{"partitions":3}` {
		t.Fatalf("metadata = %q, %v", md, err)
	}
}

func bigOf(sec int64) any { return new(big.Int).SetInt64(sec) }

// countingBackend counts eth_calls and can fail them.
type countingBackend struct {
	Backend
	calls atomic.Int64
	down  atomic.Bool
	delay time.Duration
	mu    sync.Mutex
	data  [][]byte // payloads of the eth_calls
}

var errDown = errors.New("connection refused")

func (b *countingBackend) CallContract(ctx context.Context, msg ethereum.CallMsg, n *big.Int) ([]byte, error) {
	b.calls.Add(1)
	b.mu.Lock()
	b.data = append(b.data, msg.Data)
	b.mu.Unlock()
	time.Sleep(b.delay)
	if b.down.Load() {
		return nil, errDown
	}
	return b.Backend.CallContract(ctx, msg, n)
}

// TestCacheHitsNegativeAndSingleFlight: concurrent look-ups of one key
// make one eth_call, later ones none within the TTL, and an unknown stream
// is asked once too.
func TestCacheHitsNegativeAndSingleFlight(t *testing.T) {
	var cb *countingBackend
	f := newFixture(t, Config{CacheTTL: time.Hour}, func(b Backend) Backend {
		cb = &countingBackend{Backend: b, delay: 50 * time.Millisecond}
		return cb
	})
	now := time.Now()
	for _, stream := range []string{f.stream, f.stream + "-missing"} {
		cb.calls.Store(0)
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				if _, err := f.client.Allowed(context.Background(), stream, f.owner.PublisherID(), streamr.PermissionPublish, now); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		f.client.Allowed(context.Background(), stream, f.owner.PublisherID(), streamr.PermissionSubscribe, now)
		if n := cb.calls.Load(); n != 1 {
			t.Errorf("%s: %d eth_calls for 33 look-ups of one key, want 1", stream, n)
		}
	}
}

// TestEventsInvalidate: with a long TTL, a revocation takes effect at the
// next event poll, and a public grant reaches cached users.
func TestEventsInvalidate(t *testing.T) {
	f := newFixture(t, Config{CacheTTL: time.Hour, PollInterval: 20 * time.Millisecond}, nil)
	gw := newKey(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.client.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(100 * time.Millisecond) // the poller learns the head

	now := time.Now()
	if f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) {
		t.Fatal("stranger allowed")
	}
	f.transact(t, "grantPublicPermission", f.stream, uint8(streamr.PermissionPublish))
	eventually(t, "public grant seen", func() bool { return f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) })
	f.transact(t, "revokePublicPermission", f.stream, uint8(streamr.PermissionPublish))
	eventually(t, "public revocation seen", func() bool { return !f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) })
	f.transact(t, "grantPermission", f.stream, common.Address(gw.Address()), uint8(streamr.PermissionPublish))
	eventually(t, "direct grant seen", func() bool { return f.allowed(t, gw.PublisherID(), streamr.PermissionPublish, now) })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOnUnreachable: each mode's answer when the chain stops answering,
// for a user the cache knows (allowed before) and one it does not.
func TestOnUnreachable(t *testing.T) {
	tests := []struct {
		mode                Unreachable
		known, unknown      bool
		knownErr, unknowErr bool
	}{
		{LastKnown, true, false, false, true},
		{Deny, false, false, true, true},
		{Allow, true, true, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			var cb *countingBackend
			f := newFixture(t, Config{CacheTTL: time.Millisecond, OnUnreachable: tt.mode}, func(b Backend) Backend {
				cb = &countingBackend{Backend: b}
				return cb
			})
			now := time.Now()
			if !f.allowed(t, f.owner.PublisherID(), streamr.PermissionPublish, now) {
				t.Fatal("owner refused while the chain is up")
			}
			cb.down.Store(true)
			time.Sleep(5 * time.Millisecond) // past the TTL
			ok, err := f.client.Allowed(context.Background(), f.stream, f.owner.PublisherID(), streamr.PermissionPublish, now)
			if ok != tt.known || (err != nil) != tt.knownErr || (err != nil && !errors.Is(err, ErrUnreachable)) {
				t.Errorf("known user: %v, %v; want %v, error %v", ok, err, tt.known, tt.knownErr)
			}
			ok, err = f.client.Allowed(context.Background(), f.stream, newKey(t).PublisherID(), streamr.PermissionPublish, now)
			if ok != tt.unknown || (err != nil) != tt.unknowErr {
				t.Errorf("unknown user: %v, %v; want %v, error %v", ok, err, tt.unknown, tt.unknowErr)
			}
		})
	}
}

// TestTransactErrors: the clear errors of `bridge stream` commands.
func TestTransactErrors(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	poor := newKey(t)
	tests := []struct {
		name   string
		key    *streamr.EVMKey
		method string
		args   []any
		want   error
	}{
		{"exists", f.owner, "createStream", []any{"/sensors", "{}"}, ErrStreamExists},
		{"missing", f.owner, "grantPermission", []any{f.stream + "-x", common.Address{1}, uint8(2)}, ErrStreamNotFound},
		{"not owner", poor, "grantPermission", []any{f.stream, common.Address{1}, uint8(2)}, ErrNotPermitted},
		{"no funds", poor, "createStream", []any{"/mine", "{}"}, ErrNoFunds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.Transact(ctx, tt.key, tt.method, tt.args...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("%s: %v, want %v", tt.method, err, tt.want)
			}
		})
	}
}
