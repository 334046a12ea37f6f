//go:build pkcs11 && cgo

package hw

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// TestDataKeyPKCS11 seals the data key with an AES key on a SoftHSM2
// token, reopens it, and checks that a re-initialised token (same label,
// new objects) gives an error naming the token and the file.
func TestDataKeyPKCS11(t *testing.T) {
	h := simtest.StartSoftHSM(t, "gw")
	ctx := context.Background()
	dir := t.TempDir()
	uri := "pkcs11:token=gw;object=k1?module-path=" + h.Module + "&pin-value=" + h.PIN
	path := filepath.Join(dir, "data.key")
	k, err := Create(ctx, uri, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dk := openDataKeyTwice(t, k, path, "pkcs11")
	k.Close()
	k, err = Open(ctx, uri, Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := OpenDataKey(ctx, k, path, nil)
	if err != nil || !bytes.Equal(again.Key, dk.Key) {
		t.Fatalf("reopen after closing the session: %v", err)
	}
	k.Close()

	simtest.StartSoftHSM(t, "gw") // a new token with the same label
	k, err = Create(ctx, uri, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	before, _ := os.ReadFile(path)
	_, err = OpenDataKey(ctx, k, path, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `pkcs11 token "gw"`) || !strings.Contains(err.Error(), "k1.seal") {
		t.Fatalf("data key on a replaced token: %v, want an error naming the token, its AES key and %s", err, path)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a failed unseal changed the data key file")
	}
}
