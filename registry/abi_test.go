package registry

import (
	"bufio"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts/abi"
)

// TestABIIsStreamRegistryV5s: every function and event of the embedded ABI
// has the signature StreamRegistryV5 has (as @streamr/network-contracts
// ships it) and the test contract implements it; the permission reads have
// the selectors the reference names.
func TestABIIsStreamRegistryV5s(t *testing.T) {
	ours, err := parseABI()
	if err != nil {
		t.Fatal(err)
	}
	real := realSignatures(t)
	test, err := abi.JSON(strings.NewReader(string(loadArtifact(t).ABI)))
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range ours.Methods {
		if !real[m.Sig] {
			t.Errorf("method %s: StreamRegistryV5 has no %s", name, m.Sig)
		}
		if tm, ok := test.Methods[name]; !ok || tm.Sig != m.Sig {
			t.Errorf("the test contract lacks %s", m.Sig)
		}
	}
	for name, e := range ours.Events {
		if !real[e.Sig] {
			t.Errorf("event %s: StreamRegistryV5 has no %s", name, e.Sig)
		}
		if te, ok := test.Events[name]; !ok || te.ID != e.ID {
			t.Errorf("the test contract lacks event %s", e.Sig)
		}
	}
	for sig, sel := range map[string]string{"getPermissionsForUserId": "7aa31f8c", "hasPermission": "88b21038"} {
		if got := ours.Methods[sig].ID; len(got) != 4 || hex.EncodeToString(got) != sel {
			t.Errorf("%s selector 0x%s, want 0x%s", sig, hex.EncodeToString(got), sel)
		}
	}
}

// realSignatures reads contracts/StreamRegistryV5.abi.txt into canonical
// signatures: "name(type,type)" with tuples as "(…)".
func realSignatures(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "contracts", "StreamRegistryV5.abi.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`^(?:function|event) (\w+)\((.*?)\)(?: (?:view|pure))?(?: returns .*)?$`)
	sigs := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := sc.Text()
		if strings.HasPrefix(text, "#") || text == "" {
			continue
		}
		m := line.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("StreamRegistryV5.abi.txt: unreadable line %q", text)
		}
		var types []string
		for _, p := range strings.Split(m[2], ", ") {
			if p != "" {
				types = append(types, strings.Fields(p)[0])
			}
		}
		sigs[m[1]+"("+strings.Join(types, ",")+")"] = true
	}
	if len(sigs) < 10 {
		t.Fatalf("StreamRegistryV5.abi.txt: %d signatures", len(sigs))
	}
	return sigs
}

// TestArtifactFresh: contracts/TestStreamRegistry.json is what solc-js
// makes of TestStreamRegistry.sol now. It needs contracts/node_modules
// (scripts/test.sh runs npm ci there and sets TRIBUTARY_REQUIRE_NODE).
func TestArtifactFresh(t *testing.T) {
	dir := filepath.Join("..", "contracts")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "solc")); err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_NODE") != "" {
			t.Fatal("contracts/node_modules/solc missing: run npm ci in contracts/")
		}
		t.Skip("solc-js not installed (npm ci in contracts/)")
	}
	cmd := exec.Command("node", "build.js", "--check")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node build.js --check: %v\n%s", err, out)
	}
}
