package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Listeners beyond loopback need API keys; the keys come from the list, a
// file and a systemd credential, and a bad source is named.
func TestAppListenersAndKeys(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	if err := os.WriteFile(keyFile, []byte("# app keys\nfile-key-1\n\n  file-key-2  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cred"), []byte("cred-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	for _, tc := range []struct {
		name, config string
		errHas       string   // "" = loads
		keys         []string // the keys it reads
	}{
		{"websocket on loopback", "[websocket]\naddress = \"127.0.0.1:7170\"\n", "", nil},
		{"websocket beyond loopback", "[websocket]\naddress = \"0.0.0.0:7170\"\n", "websocket.address", nil},
		{"websocket beyond loopback with keys", "[api]\nkeys = [\"k\"]\n[websocket]\naddress = \"0.0.0.0:7170\"\n", "", []string{"k"}},
		{"http beyond loopback with keys", "[api]\nkeys = [\"k\"]\n[http]\naddress = \"0.0.0.0:7171\"\n", "", []string{"k"}},
		{"empty key", "[api]\nkeys = [\"\"]\n", "api.keys[0]", nil},
		{"keys file", "[api]\nkeys = [\"k\"]\nkeys_file = \"" + keyFile + "\"\n", "", []string{"k", "file-key-1", "file-key-2"}},
		{"credential", "[api]\nkeys_credential = \"cred\"\n", "", []string{"cred-key"}},
		{"file and credential", "[api]\nkeys_file = \"x\"\nkeys_credential = \"cred\"\n", "set only one", nil},
		{"bad partitions", "[api]\npartitions = 0\n", "api.partitions", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig(writeConfig(t, tc.config))
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("%v, want an error naming %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			keys, err := cfg.apiKeyList()
			if err != nil || strings.Join(keys, ",") != strings.Join(tc.keys, ",") {
				t.Fatalf("keys %q, %v; want %q", keys, err, tc.keys)
			}
		})
	}
	cfg, err := LoadConfig(writeConfig(t, "[api]\nkeys_file = \""+filepath.Join(dir, "missing")+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.apiKeys(); err == nil || !strings.Contains(err.Error(), "api.keys_file") {
		t.Errorf("missing keys file: %v, want an error naming api.keys_file", err)
	}
}
