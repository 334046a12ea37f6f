package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/storage"
)

// TestExportChecksRunningGateway exports state directories whose store
// is held (as by a running gateway) through the HTTP API of a real
// gateway without overlay, which has no peer ID to compare: its answer
// counts only for its own state directory, by the key's publisher.
func TestExportChecksRunningGateway(t *testing.T) {
	g := newTestGateway(t, "[overlay]\nenabled = false\n")
	g.cfg.HTTP.Address = "127.0.0.1:0"
	g.run(t)
	address := waitHTTPAddr(t, g)
	own := *g.cfg
	own.HTTP.Address = address // the port it bound for port 0
	other := heldStateDir(t, address)
	unserved := heldStateDir(t, "")
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string
	}{
		{"its own state directory", &own, "this gateway holds no messages at all"}, // asked over HTTP: /streams is empty
		{"another state directory", other.cfg, fmt.Sprintf(
			"export: the gateway answering on http.address %s is not the one running on state_dir %s: it has publisher %s, the gateway on state_dir %[2]s has publisher %[4]s",
			address, other.cfg.StateDir, g.Identity().Publisher, other.publisher)},
		{"no http.address", unserved.cfg, "a running gateway holds the storage in " + storageDir(unserved.cfg) + ", and http.address is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ExportQuery(g.Identity().Publisher+"/t", 0, "", "")
			if err != nil {
				t.Fatal(err)
			}
			err = export(context.Background(), tc.cfg, q, false, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("export: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// heldState is a state directory with its own key whose store is held
// open, as a gateway running on it holds it.
type heldState struct {
	cfg       *Config
	publisher string
}

func heldStateDir(t *testing.T, httpAddress string) heldState {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(filepath.Dir(dir), "bridge.toml")
	content := fmt.Sprintf("state_dir = %q\n[overlay]\nenabled = false\n[http]\naddress = %q\n", dir, httpAddress)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	key, err := hw.Create(context.Background(), cfg.KeyURI(), cfg.KeyOptions(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	store, err := storage.Open(storage.Options{Dir: storageDir(cfg), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return heldState{cfg: cfg, publisher: keyIdentity(key).Publisher}
}

// waitHTTPAddr is the bound address of g's HTTP API, once it listens.
func waitHTTPAddr(t *testing.T, g *testGateway) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if a := g.HTTPAddr(); a != nil {
			return a.String()
		}
	}
	t.Fatalf("gateway HTTP API not listening after 10s\n%s", g.logs)
	return ""
}
