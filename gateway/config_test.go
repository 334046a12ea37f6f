package gateway

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The example documents every key with its default: parsing it must give
// exactly the defaults, so the two cannot drift apart.
func TestExampleConfigIsTheDefaults(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	t.Chdir(t.TempDir())
	path := writeConfig(t, strings.Replace(string(exampleConfig), `state_dir = "bridge-data"`, `state_dir = "`+filepath.Join(mustGetwd(t), "bridge-data")+`"`, 1))
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("example config differs from defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/tributary:/other")
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/var/lib/tributary" {
		t.Errorf("state dir %q, want the first $STATE_DIRECTORY entry", cfg.StateDir)
	}
	if l := cfg.MQTT.Listeners; len(l) != 1 || l[0].Address != "127.0.0.1:1883" || l[0].Type != "tcp" {
		t.Errorf("listeners %+v, want tcp on 127.0.0.1:1883 only", l)
	}
	if len(cfg.Rules) != 1 || !reflect.DeepEqual(cfg.Rules[0], defaultRule) {
		t.Errorf("rules %+v, want the default rule", cfg.Rules)
	}
}

func TestConfigValues(t *testing.T) {
	path := writeConfig(t, `
[storage]
quota = "512MB"
retention = "36h"
[key]
passphrase_file = "secret.txt"
[[rule]]
topic = "a/+"
stream = "{address}/a/{1}"
partitions = 4
partition_key = "{1}"
`)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Quota != 512_000_000 || time.Duration(cfg.Storage.Retention) != 36*time.Hour {
		t.Errorf("storage %+v", cfg.Storage)
	}
	if cfg.Key.PassphraseFile != filepath.Join(filepath.Dir(path), "secret.txt") {
		t.Errorf("passphrase_file %q not resolved against the config's directory", cfg.Key.PassphraseFile)
	}
	if len(cfg.Rules) != 1 || cfg.Rules[0].PartitionKey != "{1}" {
		t.Errorf("rules %+v", cfg.Rules)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, content string
		want          []string
	}{
		{"unknown key names line and key", "[storage]\nquota = \"1GB\"\nqouta = \"2GB\"\n", []string{":3:1:", `unknown key "qouta" in [storage]`}},
		{"unknown top-level key", "stat_dir = \"x\"\n", []string{":1:", `"stat_dir"`}},
		{"wrong type", "[http]\naddress = 5\n", []string{":2:1:", "address in [http]: want a string, not an integer"}},
		{"wrong type in a list of tables", "[[rule]]\ntopic = \"a\"\nstream = \"{address}/a\"\n[[rule]]\ntopic = \"b\"\nstream = \"{address}/b\"\npartitions = \"4\"\n", []string{":7:1:", "partitions in [[rule]] #2: want an integer, not a string"}},
		{"wrong element type", "[overlay]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\", 5]\n", []string{":2:1:", "bootstrap in [overlay]: element 2: want a string"}},
		{"table for a list of tables", "[rule]\ntopic = \"a\"\n", []string{":1:2:", "write [[rule]]"}},
		{"unknown table", "[strage]\nquota = \"1GB\"\n", []string{":1:2:", "unknown table [strage]"}},
		{"dotted key", "storage.quota = 5\n", []string{":1:1:", "storage.quota: want a string"}},
		{"bad duration", "[storage]\nretention = \"forever\"\n", []string{"retention", `"30s"`}},
		{"bad size", "[storage]\nquota = \"lots\"\n", []string{"quota", "512MB"}},
		{"bad level", "[log]\nlevel = \"loud\"\n", []string{`log.level "loud"`}},
		{"bad clock policy", "[signing]\non_unsynced_clock = \"wait\"\n", []string{"on_unsynced_clock"}},
		{"tls without cert", "[[mqtt.listener]]\ntype = \"tls\"\naddress = \"127.0.0.1:8883\"\n", []string{"[[mqtt.listener]] #1", "cert_file"}},
		{"bad listener type", "[[mqtt.listener]]\ntype = \"quic\"\naddress = \"x\"\n", []string{`type "quic"`}},
		{"bad rule", "[[rule]]\ntopic = \"a/#/b\"\nstream = \"{address}/x\"\n", []string{"rule 1", "'#' must be the last level"}},
		{"syntax error", "[storage\n", []string{":1:"}},
		{"key defined twice", "[log]\nlevel = \"info\"\nlevel = \"info\"\n", []string{":3:1:", "key level is already defined"}},
		{"table defined twice", "[log]\n[log]\n", []string{":2:2:", "table log already exists"}},
		{"streamr proxy not a WebSocket URL", "[streamr_network]\nproxies = [\"http://node:40600\"]\n", []string{"streamr_network.proxies", `scheme "http"`}},
		{"streamr proxy with a path", "[streamr_network]\nproxies = [\"wss://node:443/api\"]\n", []string{"streamr_network.proxies", "no path"}},
		{"streamr publish without proxies", "[streamr_network]\npublish = true\n", []string{"streamr_network.proxies: empty"}},
		{"subscribe from the network without proxies", "[[subscribe]]\nstream = \"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x\"\nsource = \"streamr_network\"\n", []string{"streamr_network.proxies: empty"}},
		{"bad subscribe source", "[[subscribe]]\nstream = \"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x\"\nsource = \"mqtt\"\n", []string{"subscribe 1", `source "mqtt"`}},
		{"streamr limits", "[streamr_network]\nmax_frames_per_second = 0\nreconnect_max = \"1ms\"\n", []string{"max_frames_per_second", "reconnect_max"}},
		{"registry mode", "[registry]\non_unreachable = \"maybe\"\n", []string{`registry.on_unreachable "maybe"`, "last-known, deny or allow"}},
		{"registry address", "[registry]\naddress = \"0x123\"\n", []string{"registry.address", `"0x123"`}},
		{"registry ttl", "[registry]\ncache_ttl = \"0s\"\n", []string{"registry.cache_ttl"}},
		{"key server without subscribers", "[[store]]\nstream = \"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x\"\nanswer_key_requests = true\n", []string{"store 1", "answer_key_requests without subscribers"}},
		{"store subscribers without key serving", "[[store]]\nstream = \"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x\"\nsubscribers = [\"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf\"]\n", []string{"store 1", "only used with answer_key_requests = true"}},
		{"store subscriber not an address", "[[store]]\nstream = \"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x\"\nanswer_key_requests = true\nsubscribers = [\"0x12\"]\n", []string{"store 1: subscribers", `"0x12"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, err := LoadConfig(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(strings.ReplaceAll(err.Error(), path, ""), "toml: ") {
				t.Errorf("error %q speaks in the parser's terms", err)
			}
		})
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// Every key of the configuration must be documented in the example file.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	defaults, err := toml.Marshal(defaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := tomlKeys(t, defaults)
	got := tomlKeys(t, exampleConfig)
	for key := range want {
		if !got[key] {
			t.Errorf("key %s is not in bridge.example.toml", key)
		}
	}
	for _, table := range []string{"rule", "subscribe", "store", "overlay.publishers"} {
		if !bytes.Contains(exampleConfig, []byte("[["+table+"]]")) {
			t.Errorf("[[%s]] is not documented in bridge.example.toml", table)
		}
	}
}

func tomlKeys(t *testing.T, doc []byte) map[string]bool {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	keys := make(map[string]bool)
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			if arr, ok := v.([]any); ok && len(arr) == 0 {
				continue // empty arrays of tables are documented as comments
			}
			keys[prefix+k] = true
		}
	}
	walk("", m)
	return keys
}

// All mistakes of a file come in one report, in the file's terms (TOML
// keys and tables, never Go type names), each with its line.
func TestConfigErrorsAllAtOnce(t *testing.T) {
	path := writeConfig(t, `state_dir = 5
[storage]
quota = "lots"
qouta = "1GB"
[log]
level = "loud"
[[rule]]
topic = "a/+"
stream = "{address}/a/{1}"
partitions = "4"
[[subscribe]]
stream = "nope"
metadata = "yes"
`)
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		path + ":1:1: state_dir: want a string, not an integer",
		path + `:3:1: quota in [storage]: size "lots"`,
		path + `:4:1: unknown key "qouta" in [storage]`,
		path + ":10:1: partitions in [[rule]] #1: want an integer, not a string",
		path + ":13:1: metadata in [[subscribe]] #1: want true or false, not a string",
		`log.level "loud"`,
		`subscribe 1 (stream "nope")`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("report lacks %q:\n%s", want, msg)
		}
	}
	for _, goName := range []string{"main.", "RuleConfig", "Partitions"} {
		if strings.Contains(msg, goName) {
			t.Errorf("report names Go's %q:\n%s", goName, msg)
		}
	}
}
