package registry

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tributary-iot/tributary/streamr"
)

// Hand-encoded eth_call payloads (selector, then the ABI head and tail
// words) for stream "0x0000000000000000000000000000000000000001/a": the
// bytes any StreamRegistry client sends, written out without the encoder.
const (
	payloadStream = "0x0000000000000000000000000000000000000001/a"
	// getPermissionsForUserId(string,bytes), user 0x…02 (20 bytes)
	wantGetPermissions = "7aa31f8c" +
		"0000000000000000000000000000000000000000000000000000000000000040" + // offset of the string
		"00000000000000000000000000000000000000000000000000000000000000a0" + // offset of the bytes
		"000000000000000000000000000000000000000000000000000000000000002c" + // 44 characters
		"3078303030303030303030303030303030303030303030303030303030303030" + // "0x0000000000000000000000000000"
		"303030303030303030312f610000000000000000000000000000000000000000" + // "0000000001/a", padded
		"0000000000000000000000000000000000000000000000000000000000000014" + // 20 bytes
		"0000000000000000000000000000000000000002000000000000000000000000"
	// hasPermission(string,address,uint8), user 0x…02, Publish (2)
	wantHasPermission = "88b21038" +
		"0000000000000000000000000000000000000000000000000000000000000060" +
		"0000000000000000000000000000000000000000000000000000000000000002" +
		"0000000000000000000000000000000000000000000000000000000000000002" +
		"000000000000000000000000000000000000000000000000000000000000002c" +
		"3078303030303030303030303030303030303030303030303030303030303030" +
		"303030303030303030312f610000000000000000000000000000000000000000"
)

// TestEthCallPayloads records what the client sends for the two
// permission reads against the known selectors.
func TestEthCallPayloads(t *testing.T) {
	owner := newKey(t)
	chain := newSimChain(t, owner)
	cb := &countingBackend{Backend: chain.backend}
	c, err := New(cb, Config{Address: chain.contract.Hex()})
	if err != nil {
		t.Fatal(err)
	}
	user := common.HexToAddress("0x0000000000000000000000000000000000000002")
	ctx := context.Background()
	if ok, err := c.Allowed(ctx, payloadStream, user.Bytes(), streamr.PermissionPublish, time.Now()); ok || err != nil {
		t.Fatalf("Allowed on an unknown stream = %v, %v", ok, err)
	}
	if ok, err := c.HasPermission(ctx, payloadStream, user, streamr.PermissionPublish); ok || err != nil {
		t.Fatalf("hasPermission on an unknown stream = %v, %v", ok, err)
	}
	if len(cb.data) != 2 {
		t.Fatalf("%d eth_calls, want 2", len(cb.data))
	}
	for i, want := range []string{wantGetPermissions, wantHasPermission} {
		if got := hex.EncodeToString(cb.data[i]); got != want {
			t.Errorf("eth_call %d:\n got %s\nwant %s", i, split(got), split(want))
		}
	}
}

func split(h string) string {
	var b strings.Builder
	b.WriteString(h[:8])
	for i := 8; i < len(h); i += 64 {
		b.WriteString("\n     " + h[i:min(len(h), i+64)])
	}
	return b.String()
}
