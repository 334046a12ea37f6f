package overlay

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// StoredIdentity reads the persisted peer ID without creating one, and
// turns listen addresses into dialable ones: unspecified IPs become the
// interface addresses (loopback among them), port 0 is left out.
func TestStoredIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.key")
	cfg := Config{IdentityFile: path, ListenAddrs: []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/127.0.0.1/udp/0/quic-v1"}}
	if _, _, err := StoredIdentity(cfg); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("no identity file: %v, want ErrNoIdentity", err)
	}
	if _, err := StoredPeerID(path); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("StoredPeerID without an identity file: %v, want ErrNoIdentity", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("StoredIdentity created the identity file (%v)", err)
	}
	key, err := createIdentity(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	id, addrs, err := StoredIdentity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if id != want.String() {
		t.Fatalf("peer ID %s, want %s", id, want)
	}
	if got, err := StoredPeerID(path); err != nil || got != id {
		t.Fatalf("StoredPeerID = %s, %v; want %s", got, err, id)
	}
	loopback := "/ip4/127.0.0.1/tcp/4001/p2p/" + id
	found := false
	for _, a := range addrs {
		found = found || a == loopback
		if strings.Contains(a, "0.0.0.0") || strings.Contains(a, "/udp/0/") {
			t.Errorf("address %s is not dialable", a)
		}
	}
	if !found {
		t.Errorf("addresses %v lack %s", addrs, loopback)
	}
	cfg.AnnounceAddrs = []string{"/dns4/gw.example.org/tcp/4001"}
	if _, addrs, _ := StoredIdentity(cfg); len(addrs) != 1 || addrs[0] != "/dns4/gw.example.org/tcp/4001/p2p/"+id {
		t.Errorf("with announce: %v", addrs)
	}
}

func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{BootstrapPeers: []string{"/ip4/127.0.0.1/tcp/4001"}}, "/p2p/"},
		{Config{ListenAddrs: []string{"0.0.0.0:4001"}}, "0.0.0.0:4001"},
		{Config{AnnounceAddrs: []string{"gw.example.org"}}, "gw.example.org"},
		{Config{MaxConns: 2}, "max_conns 2"},
	} {
		if err := tc.cfg.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%+v) = %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{}).Check(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}
