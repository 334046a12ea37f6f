package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckConfigCommand(t *testing.T) {
	good := writeConfig(t, "[log]\nlevel = \"debug\"\n")
	var out, errb bytes.Buffer
	if err := runCommand(t.Context(), []string{"check-config", good}, nil, &out, &errb); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if !strings.Contains(out.String(), "is valid") {
		t.Errorf("output %q", out.String())
	}
	open := writeConfig(t, "[[mqtt.listener]]\ntype = \"tcp\"\naddress = \"0.0.0.0:1883\"\n")
	err := runCommand(t.Context(), []string{"check-config", open}, nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "0.0.0.0:1883") {
		t.Fatalf("non-loopback listener without auth: got %v", err)
	}
}

// check-config and run share one validation: every config run refuses,
// check-config refuses with the same message, and run refuses it before
// it creates the state directory, a key or a peer identity.
func TestCheckConfigRefusesWhatRunRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	tests := []struct{ name, content, want string }{
		{"bootstrap without peer ID", "[overlay]\nbootstrap = [\"/ip4/127.0.0.1/tcp/4001\"]\n", "/p2p/"},
		{"bootstrap not a multiaddr", "[overlay]\nbootstrap = [\"127.0.0.1:4001\"]\n", "127.0.0.1:4001"},
		{"listen not a multiaddr", "[overlay]\nlisten = [\"0.0.0.0:4001\"]\n", "0.0.0.0:4001"},
		{"announce not a multiaddr", "[overlay]\nannounce = [\"example.org\"]\n", "example.org"},
		{"too few connections", "[overlay]\nmax_connections = 2\n", "max_conns 2"},
		{"stream never valid", "[[rule]]\ntopic = \"sensors/+\"\nstream = \"sensors/{1}\"\n", `owner "sensors"`},
		{"unknown key scheme", "[key]\nuri = \"vault://k\"\n", "vault"},
		{"missing users file", "[mqtt]\nusers_file = \"nope.toml\"\n", "nope.toml"},
		{"missing certificate", "[[mqtt.listener]]\ntype = \"tls\"\naddress = \"127.0.0.1:0\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "c.pem"},
		{"open listener without users", "[[mqtt.listener]]\ntype = \"tcp\"\naddress = \"0.0.0.0:0\"\n", "0.0.0.0:0"},
		{"type error", "[overlay]\nmax_connections = \"64\"\n", "max_connections in [overlay]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			path := filepath.Join(dir, "bridge.toml")
			cfg := fmt.Sprintf("state_dir = %q\n[http]\naddress = \"\"\n%s", state, tc.content)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			_, checkErr, checkCode := runBridge("check-config", path)
			_, runErr, runCode := runBridge("run", "--config", path)
			if checkCode == 0 || runCode == 0 {
				t.Fatalf("check-config exit %d %q; run exit %d %q", checkCode, checkErr, runCode, runErr)
			}
			if checkErr != runErr || !strings.Contains(runErr, tc.want) {
				t.Errorf("check-config said %q, run said %q; want both to say %q", checkErr, runErr, tc.want)
			}
			if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("run left the state directory behind (%v)", err)
			}
		})
	}
}
