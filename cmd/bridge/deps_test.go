package main

import (
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/tributary-iot/tributary/"

// TestImportRules keeps the architecture of ARCHITECTURE.md / the README:
// each third-party engine lives behind exactly one package, streamr/ is
// the leaf everyone shares, the pipeline depends on interfaces, not on
// the broker, the overlay or the key backends, gateway/ alone assembles
// them, and cmd/bridge is the command line on top of gateway/.
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
		"github.com/pelletier/go-toml":    "gateway",              // the config file
		"github.com/BurntSushi/toml":      "broker",
		"github.com/gorilla/websocket":    "wsock",
		"github.com/ethereum/go-ethereum": "streamr hw registry", // crypto in streamr/ and hw/
		// The chain's RPC side: only the StreamRegistry client talks to Ethereum nodes.
		"github.com/ethereum/go-ethereum/ethclient":    "registry",
		"github.com/ethereum/go-ethereum/rpc":          "registry",
		"github.com/ethereum/go-ethereum/accounts/abi": "registry",
		"github.com/ethereum/go-ethereum/core/types":   "registry",
		"mvdan.cc/sh":          "scripts/scriptcheck", // the shell parser of the fresh-machine check
		"golang.org/x/term":    "cmd/bridge",          // passwd's prompt without echo
		"github.com/chromedp/": "cmd/bridge",          // the status page's browser test (test only)
		// The simulators' harness is for tests only: no package imports it.
		module + "hw/simtest": "",
	}
	forbidden := map[string][]string{ // package → project packages it must not import
		"streamr":    {"bridge", "broker", "overlay", "storage", "hw", "systemd", "gateway", "cmd", "e2ee"},
		"bridge":     {"broker", "overlay", "hw", "systemd", "gateway", "cmd", "e2ee"},
		"broker":     {"bridge", "overlay", "storage", "hw", "streamr", "gateway", "cmd", "e2ee"},
		"overlay":    {"bridge", "broker", "storage", "hw", "gateway", "cmd", "e2ee"},
		"storage":    {"bridge", "broker", "overlay", "hw", "gateway", "cmd", "e2ee"},
		"hw":         {"bridge", "broker", "overlay", "storage", "gateway", "cmd", "e2ee"},
		"systemd":    {"bridge", "broker", "overlay", "storage", "hw", "gateway", "cmd", "e2ee"},
		"reasoncode": {"bridge", "broker", "overlay", "storage", "hw", "streamr", "gateway", "cmd", "e2ee"},
		"registry":   {"bridge", "broker", "overlay", "storage", "hw", "systemd", "gateway", "cmd", "e2ee"},
		"wsock":      {"bridge", "broker", "overlay", "storage", "hw", "streamr", "systemd", "reasoncode", "gateway", "cmd", "e2ee"},
		"appapi":     {"broker", "overlay", "hw", "systemd", "gateway", "cmd"},
		// The Streamr Network client speaks the wire over wsock and streamr/
		// only; gateway/ assembles it with the pipeline.
		"streamrnet": {"bridge", "broker", "overlay", "storage", "hw", "systemd", "gateway", "cmd"},
		// The status page only renders what the gateway hands it (the
		// Streamr Network proxies as streamrnet reports them).
		"statuspage": {"bridge", "broker", "overlay", "storage", "hw", "systemd", "gateway", "cmd", "e2ee", "appapi", "streamrnet", "registry"},
		"gateway":    {"cmd"},
		// End-to-end encryption knows keys and streamr/, not the transport
		// or the storage engine (its callers hand it both).
		"e2ee": {"bridge", "broker", "overlay", "storage", "hw", "systemd", "wsock", "appapi", "gateway", "cmd"},
		// The command line reaches the pipeline, the overlay and storage
		// only through the gateway that assembles them.
		"cmd": {"bridge", "overlay", "storage", "e2ee"},
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

// TestSharedTypesDefinedOnce: a concept that crosses package lines has one
// type, in streamr/ or reasoncode/ (see the README's Development section).
// Copies drift (two ResendQuery types once disagreed on what a zero To
// means) and need adapters that only convert. It checks the names of the
// shared vocabulary, and that no two struct types of different packages
// have the same fields and tags (a copy under another name).
func TestSharedTypesDefinedOnce(t *testing.T) {
	defs := moduleDecls(t)
	shared := map[string]string{ // name → the one package defining it
		"ResendQuery":  "streamr",
		"ChainReceipt": "streamr",
		"Envelope":     "streamr",
		"ErrNoPeers":   "streamr",
		"MaxRef":       "streamr",
		"Code":         "reasoncode",
	}
	for name, home := range shared {
		pkgs := defs.names[name]
		if len(pkgs) != 1 || pkgs[0] != home {
			t.Errorf("%s is defined in %v, want only in %s", name, pkgs, home)
		}
	}
	if _, ok := defs.names["ReasonCode"]; ok {
		t.Errorf("ReasonCode is defined in %v: use reasoncode.Code (a type alias is fine)", defs.names["ReasonCode"])
	}
	for shape, structs := range defs.shapes {
		pkgs := map[string]bool{}
		for _, s := range structs {
			pkgs[strings.SplitN(s, ".", 2)[0]] = true
		}
		if len(pkgs) > 1 {
			t.Errorf("struct types %v have the same fields {%s}: define the concept once", structs, shape)
		}
	}
}

type decls struct {
	names  map[string][]string // exported type or variable name → packages defining it (aliases excluded)
	shapes map[string][]string // exported struct fields → "pkg.Type" with them
}

// moduleDecls parses every non-test, non-generated Go file of the module.
func moduleDecls(t *testing.T) decls {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	d := decls{names: map[string][]string{}, shapes: map[string][]string{}}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && (e.Name() == "testdata" || e.Name() == "node_modules" || strings.HasPrefix(e.Name(), ".")) {
			return filepath.SkipDir
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		files++
		d.add(filepath.ToSlash(rel), f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("parsed %d files under %s: the check saw nothing", files, root)
	}
	return d
}

func (d decls) add(pkg string, f *ast.File) {
	for _, decl := range f.Decls {
		g, ok := decl.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, spec := range g.Specs {
			switch s := spec.(type) {
			case *ast.TypeSpec:
				if !s.Name.IsExported() || s.Assign.IsValid() {
					continue
				}
				d.names[s.Name.Name] = append(d.names[s.Name.Name], pkg)
				if st, ok := s.Type.(*ast.StructType); ok && len(st.Fields.List) > 1 {
					shape := structShape(st)
					d.shapes[shape] = append(d.shapes[shape], pkg+"."+s.Name.Name)
				}
			case *ast.ValueSpec:
				for _, n := range s.Names {
					if n.IsExported() && g.Tok == token.VAR {
						d.names[n.Name] = append(d.names[n.Name], pkg)
					}
				}
			}
		}
	}
}

// structShape lists a struct's fields as "name type `tag`", in order. The
// tag counts: a config file's table (toml tags) mirroring a package's
// config is a decoding layer, not a second vocabulary.
func structShape(st *ast.StructType) string {
	var b strings.Builder
	for _, f := range st.Fields.List {
		typ := types.ExprString(f.Type)
		if f.Tag != nil {
			typ += " " + f.Tag.Value
		}
		if len(f.Names) == 0 {
			b.WriteString(typ + "; ")
		}
		for _, n := range f.Names {
			b.WriteString(n.Name + " " + typ + "; ")
		}
	}
	return strings.TrimSuffix(b.String(), "; ")
}
