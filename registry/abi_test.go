package registry

import (
	"bufio"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts/abi"

	"github.com/tributary-iot/tributary/registry/registrytest"
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

// TestGethVersionIsGoMods: registrytest runs the geth scripts/test.sh
// builds for go.mod's go-ethereum.
func TestGethVersionIsGoMods(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "github.com/ethereum/go-ethereum " + registrytest.GethVersion + "\n"; !strings.Contains(string(mod), want) {
		t.Fatalf("go.mod does not require %q: update registrytest.GethVersion", strings.TrimSpace(want))
	}
}
