package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const unitFile = "bridge.service"

// maxExposure is the highest `systemd-analyze security` exposure rated "OK".
const maxExposure = 2.0

// lookTool finds an external tool; without it the test is skipped, unless TRIBUTARY_REQUIRE_TOOLS is set
// (as in CI), where a missing tool is a failure.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s not found and TRIBUTARY_REQUIRE_TOOLS is set: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return path
}

// unitRoot builds a file system root for offline systemd-analyze runs: the host's unit directory (for
// the targets bridge.service refers to), the unit under test, executables at its ExecStart and
// ExecReload paths and the given drop-ins.
func unitRoot(t *testing.T, dropIns map[string]string) string {
	t.Helper()
	root := t.TempDir()
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	for _, dir := range []string{unitDir, filepath.Join(root, "bin"), filepath.Join(root, "usr/bin"), filepath.Join(root, "etc/systemd/system/bridge.service.d")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostUnits, err := filepath.Glob("/usr/lib/systemd/system/*.target")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range hostUnits {
		copyFile(t, u, filepath.Join(unitDir, filepath.Base(u)), 0o644)
	}
	copyFile(t, unitFile, filepath.Join(unitDir, unitFile), 0o644)
	copyFile(t, "/bin/true", filepath.Join(root, "usr/bin/bridge"), 0o755)
	copyFile(t, "/bin/true", filepath.Join(root, "bin/kill"), 0o755)
	for name, body := range dropIns {
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/bridge.service.d", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// lowPortDropIn is the documented drop-in for an MQTT listener on a port below 1024.
const lowPortDropIn = "[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"

var unitVariants = []struct {
	name    string
	dropIns map[string]string
}{
	{"as shipped", nil},
	{"with low-port drop-in", map[string]string{"low-port.conf": lowPortDropIn}},
}

func TestUnitVerifies(t *testing.T) {
	analyze := lookTool(t, "systemd-analyze")
	for _, v := range unitVariants {
		t.Run(v.name, func(t *testing.T) {
			root := unitRoot(t, v.dropIns)
			out, err := exec.Command(analyze, "verify", "--root="+root, unitFile).CombinedOutput()
			// verify exits 0 on settings it ignores, so any diagnostic counts as a failure.
			if err != nil || len(out) > 0 {
				t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
			}
		})
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for bridge\.service: ([0-9.]+) (\S+)`)

func TestUnitSecurityExposure(t *testing.T) {
	analyze := lookTool(t, "systemd-analyze")
	for _, v := range unitVariants {
		t.Run(v.name, func(t *testing.T) {
			root := unitRoot(t, v.dropIns)
			out, err := exec.Command(analyze, "security", "--offline=true", "--root="+root, "--no-pager", unitFile).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security: %v\n%s", err, out)
			}
			m := exposureLine.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no overall exposure line in:\n%s", out)
			}
			exposure, err := strconv.ParseFloat(string(m[1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("exposure %.1f %s", exposure, m[2])
			if exposure > maxExposure {
				t.Errorf("exposure %.1f %s, want at most %.1f:\n%s", exposure, m[2], maxExposure, out)
			}
		})
	}
}

// unitSettings parses the unit into "Section.Key" -> values (a key may repeat).
func unitSettings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: malformed line %q", unitFile, line)
			}
			settings[section+"."+key] = append(settings[section+"."+key], value)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return settings
}

// TestUnitContract pins the settings the daemon and the image rely on; systemd-analyze accepts units
// without any of them.
func TestUnitContract(t *testing.T) {
	settings := unitSettings(t)
	tests := []struct {
		key  string
		want string // the single expected value
	}{
		{"Service.Type", "notify"},
		{"Service.NotifyAccess", "main"},
		{"Service.WatchdogSec", "30s"},
		{"Service.Restart", "on-failure"},
		{"Service.StateDirectory", "tributary"},
		{"Service.User", "tributary"},
		{"Service.SupplementaryGroups", "i2c gpio tss"},
		{"Service.CapabilityBoundingSet", ""},
		{"Service.AmbientCapabilities", ""},
		{"Service.NoNewPrivileges", "yes"},
		{"Service.ProtectSystem", "strict"},
		{"Service.PrivateTmp", "yes"},
		{"Service.DevicePolicy", "closed"},
		{"Service.RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"},
		{"Service.LoadCredential", "tributary.key-passphrase"},
		{"Service.ExecStart", "/usr/bin/bridge run --config /etc/tributary/bridge.toml"},
		{"Install.WantedBy", "multi-user.target"},
	}
	for _, tt := range tests {
		if got := settings[tt.key]; len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s = %q, want exactly [%q]", tt.key, got, tt.want)
		}
	}
	if got := settings["Service.SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter = %q, want an allow list starting with @system-service", got)
	}
	// A gateway without an uplink must still accept and buffer readings at once.
	for _, key := range []string{"Unit.After", "Unit.Wants", "Unit.Requires", "Unit.BindsTo"} {
		for _, v := range settings[key] {
			if strings.Contains(v, "network-online.target") {
				t.Errorf("%s=%s: the bridge must not wait for network-online.target", key, v)
			}
		}
	}
}
