package main

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tributary-iot/tributary/"

// TestImportRules keeps the architecture of ARCHITECTURE.md / the README:
// each third-party engine lives behind exactly one package, streamr/ is
// the leaf everyone shares, and the pipeline depends on interfaces, not on
// the broker, the overlay or the key backends.
func TestImportRules(t *testing.T) {
	imports := packageImports(t)
	engines := map[string]string{ // import path prefix → the one package (tree) allowed to import it
		"github.com/mochi-mqtt/server":    "broker",
		"github.com/libp2p/":              "overlay",
		"github.com/dgraph-io/badger":     "storage",
		"periph.io/x/":                    "hw",
		"github.com/google/go-tpm":        "hw",
		"github.com/miekg/pkcs11":         "hw",
		"github.com/multiformats/":        "overlay",
		"github.com/eclipse/paho.":        "bench firmware-image", // MQTT clients of the load generator and the boot test
		"github.com/pelletier/go-toml":    "cmd/bridge",
		"github.com/BurntSushi/toml":      "broker",
		"github.com/gorilla/websocket":    "broker",
		"github.com/ethereum/go-ethereum": "streamr hw",
		"mvdan.cc/sh":                     "scripts/scriptcheck", // the shell parser of the fresh-machine check
		"golang.org/x/term":               "cmd/bridge",          // passwd's prompt without echo
	}
	forbidden := map[string][]string{ // package → project packages it must not import
		"streamr":    {"bridge", "broker", "overlay", "storage", "hw", "systemd", "cmd"},
		"bridge":     {"broker", "overlay", "hw", "systemd", "cmd"},
		"broker":     {"bridge", "overlay", "storage", "hw", "streamr", "cmd"},
		"overlay":    {"bridge", "broker", "storage", "hw", "cmd"},
		"storage":    {"bridge", "broker", "overlay", "hw", "cmd"},
		"hw":         {"bridge", "broker", "overlay", "storage", "cmd"},
		"reasoncode": {"bridge", "broker", "overlay", "storage", "hw", "streamr", "cmd"},
	}
	for pkg, deps := range imports {
		rel := strings.TrimPrefix(pkg, module)
		top := strings.SplitN(rel, "/", 2)[0]
		for _, dep := range deps {
			for prefix, owners := range engines {
				if strings.HasPrefix(dep, prefix) && !ownedBy(rel, owners) {
					t.Errorf("%s imports %s: only %q may", rel, dep, owners)
				}
			}
			for _, bad := range forbidden[top] {
				if strings.HasPrefix(dep, module+bad) {
					t.Errorf("%s imports %s, against the import rules", rel, strings.TrimPrefix(dep, module))
				}
			}
		}
	}
}

func ownedBy(rel, owners string) bool {
	for _, o := range strings.Fields(owners) {
		if rel == o || strings.HasPrefix(rel, o+"/") {
			return true
		}
	}
	return false
}

// packageImports lists the non-test imports of every package of the module.
func packageImports(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", module+"...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	imports := make(map[string][]string)
	dec := json.NewDecoder(out)
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		imports[p.ImportPath] = p.Imports
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if len(imports) < 10 {
		t.Fatalf("go list found %d packages: the rules checked nothing", len(imports))
	}
	return imports
}
