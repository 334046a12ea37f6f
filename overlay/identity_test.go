package overlay

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestIdentityPersists(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	path := filepath.Join(t.TempDir(), "state", "overlay.key")
	first, err := loadIdentity(path, log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("identity file mode %v, want 0600", perm)
	}
	if first.Type() != crypto.Ed25519 {
		t.Errorf("key type %v, want Ed25519", first.Type())
	}
	again, err := loadIdentity(path, log)
	if err != nil {
		t.Fatal(err)
	}
	id1, _ := peer.IDFromPrivateKey(first)
	id2, _ := peer.IDFromPrivateKey(again)
	if id1 != id2 {
		t.Errorf("peer ID changed across loads: %s then %s", id1, id2)
	}
}

func TestIdentityErrors(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.key")
	if err := os.WriteFile(corrupt, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"corrupt file", corrupt},
		{"directory", dir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := loadIdentity(tc.path, log); err == nil {
				t.Fatalf("loadIdentity(%s) succeeded", tc.path)
			}
		})
	}
}
