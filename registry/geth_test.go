package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tributary-iot/tributary/registry/registrytest"
	"github.com/tributary-iot/tributary/streamr"
)

// recorder is a JSON-RPC proxy in front of geth that keeps the data of
// every eth_call.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) proxy(t *testing.T, upstream string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var msg struct {
			Method string `json:"method"`
			Params []json.RawMessage
		}
		if json.Unmarshal(body, &msg) == nil && msg.Method == "eth_call" && len(msg.Params) > 0 {
			var call struct{ Input, Data string }
			_ = json.Unmarshal(msg.Params[0], &call)
			r.mu.Lock()
			r.calls = append(r.calls, strings.TrimPrefix(call.Input+call.Data, "0x"))
			r.mu.Unlock()
		}
		resp, err := http.Post(upstream, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestGethDev runs the client against a real geth --dev with the test
// StreamRegistry: the exact eth_call payloads on the wire, the revert of
// an unknown stream, transactions, expirations against block.timestamp
// and public permissions.
func TestGethDev(t *testing.T) {
	if testing.Short() {
		t.Skip("runs geth")
	}
	chain := registrytest.Start(t)
	rec := &recorder{}
	srv := rec.proxy(t, chain.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Dial(ctx, Config{RPCURL: srv.URL, Address: chain.Registry.Hex(), CacheTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	user := common.HexToAddress("0x0000000000000000000000000000000000000002")
	if ok, err := c.Allowed(ctx, payloadStream, user.Bytes(), streamr.PermissionPublish, time.Now()); ok || err != nil {
		t.Fatalf("unknown stream: Allowed = %v, %v; want false, nil (the revert read as error_streamDoesNotExist)", ok, err)
	}
	if ok, err := c.HasPermission(ctx, payloadStream, user, streamr.PermissionPublish); ok || err != nil {
		t.Fatalf("unknown stream: hasPermission = %v, %v", ok, err)
	}
	rec.mu.Lock()
	calls := append([]string(nil), rec.calls...)
	rec.mu.Unlock()
	if len(calls) != 2 || calls[0] != wantGetPermissions || calls[1] != wantHasPermission {
		t.Fatalf("eth_call payloads on the wire:\n%s\nwant\n%s\n%s", strings.Join(calls, "\n"), wantGetPermissions, wantHasPermission)
	}

	if _, err := c.Transact(ctx, chain.DevKey, "createStream", "/real", `{"partitions":2}`); err != nil {
		t.Fatal(err)
	}
	stream := strings.ToLower(common.Address(chain.DevKey.Address()).Hex()) + "/real"
	if _, err := c.Transact(ctx, chain.DevKey, "createStream", "/real", `{}`); !errors.Is(err, ErrStreamExists) {
		t.Fatalf("second createStream: %v, want ErrStreamExists", err)
	}
	gw := newKey(t)
	expiry := time.Now().Add(4 * time.Second).Unix()
	if _, err := c.Transact(ctx, chain.DevKey, "setExpirationTime", stream, common.Address(gw.Address()), uint8(streamr.PermissionPublish), big.NewInt(expiry)); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Allowed(ctx, stream, gw.PublisherID(), streamr.PermissionPublish, time.Now()); !ok || err != nil {
		t.Fatalf("Publish before its expiration: %v, %v", ok, err)
	}
	if ok, _ := c.HasPermission(ctx, stream, common.Address(gw.Address()), streamr.PermissionPublish); !ok {
		t.Fatal("hasPermission false before the expiration")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := c.HasPermission(ctx, stream, common.Address(gw.Address()), streamr.PermissionPublish)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break // block.timestamp passed the expiration
		}
		if time.Now().After(deadline) {
			t.Fatal("hasPermission still true 30s after the expiration: blocks do not advance")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if ok, _ := c.Allowed(ctx, stream, gw.PublisherID(), streamr.PermissionPublish, time.Now()); ok {
		t.Fatal("Publish allowed after its expiration")
	}

	p256 := mustP256(t)
	if _, err := c.Transact(ctx, chain.DevKey, "grantPublicPermission", stream, uint8(streamr.PermissionSubscribe)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Allowed(ctx, stream, p256, streamr.PermissionSubscribe, time.Now()); !ok {
		t.Fatal("public Subscribe does not reach a P-256 user")
	}
	if md, err := c.Metadata(ctx, stream); err != nil || md != `{"partitions":2}` {
		t.Fatalf("metadata %q, %v", md, err)
	}
	users, err := c.Users(ctx, stream, 0)
	if err != nil || len(users) != 3 { // creator, gw, public
		t.Fatalf("users from events: %x, %v; want the creator, the gateway and public", users, err)
	}
}
