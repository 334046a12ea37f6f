package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/statuspage"
)

// `bridge status` and `bridge peers` against no gateway, and against a
// running one with a peer and a backlog (an unhealthy one: see
// TestStartOnFullDisk).
func TestStatusCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real bridges")
	}
	t.Run("no gateway running", func(t *testing.T) {
		config := filepath.Join(t.TempDir(), "bridge.toml") // nothing listens on port 1
		if err := os.WriteFile(config, []byte("[http]\naddress = \"127.0.0.1:1\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"status", "peers"} {
			_, stderr, code := runBridge(cmd, "--config", config)
			if code != 1 || !strings.Contains(stderr, "no gateway is running at http://127.0.0.1:1") {
				t.Errorf("bridge %s with no gateway: exit %d, stderr %q", cmd, code, stderr)
			}
		}
	})
	a, b := pageFixture(t)
	addr, bID := a.address(), b.peerID()
	t.Run("status", func(t *testing.T) {
		out, stderr, code := runBridge("status", "--config", a.config)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"health", addr, "forward backlog", "/live/data#0", "/held/data#0"} {
			if !strings.Contains(out, want) {
				t.Errorf("bridge status does not show %q:\n%s", want, out)
			}
		}
		if first, _, _ := strings.Cut(out, "\n"); !strings.Contains(first, "health") || strings.Contains(first, "FAULT") {
			t.Errorf("first line %q: want the health, not a fault", first)
		}
	})
	t.Run("status --json", func(t *testing.T) {
		out, stderr, code := runBridge("status", "--json", "--config", a.config)
		var st statuspage.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s%s", code, err, out, stderr)
		}
		if st.SchemaVersion != statuspage.SchemaVersion || st.Identity.Publisher != addr || !st.Health.OK ||
			st.Forward == nil || st.Forward.BacklogMessages < heldReadings || livePeers(st) != 1 {
			t.Errorf("schema %d, publisher %s, health %+v, forward %+v, live peers %d", st.SchemaVersion, st.Identity.Publisher, st.Health, st.Forward, livePeers(st))
		}
		for _, p := range st.Partitions {
			if held := p.HeldSince != nil; held != strings.HasSuffix(p.Stream, "/held/data") {
				t.Errorf("%s: held_since %v; want it set only on the stream nobody carries", p.ID, p.HeldSince)
			}
		}
	})
	t.Run("peers", func(t *testing.T) {
		out, stderr, code := runBridge("peers", "--config", a.config)
		if code != 0 || !strings.Contains(out, bID) || !strings.Contains(out, "/live/data#0") {
			t.Errorf("bridge peers: exit %d, want B %s carrying live/data:\n%s%s", code, bID, out, stderr)
		}
		out, _, _ = runBridge("peers", "--json", "--config", a.config)
		var nodes []statuspage.Node
		if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) < 2 || nodes[0].Kind != "self" {
			t.Errorf("bridge peers --json: %v: %s", err, out)
		}
	})
}
