package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const repoRoot = "../.."

func committedInputs(t *testing.T) *inputs {
	t.Helper()
	in, err := loadInputs("commands.txt", "fresh-machine.txt")
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestRepositoryScripts is the check itself on this repository: a script that calls a command a fresh
// machine lacks without installing its package, or that carries on after a failed step, fails here.
func TestRepositoryScripts(t *testing.T) {
	problems, err := check(repoRoot, committedInputs(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// writeTree creates files (path → content; a content starting with #! is made executable).
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for path, content := range files {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const strict = "#!/usr/bin/env bash\nset -euo pipefail\nshopt -s inherit_errexit\n"

func TestCheckFindsBrokenScripts(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the problems, in order; none for a clean tree
	}{
		{"mmdebstrap without arch-test, as the issue saw it", map[string]string{
			"firmware-image/build.sh": strict + "install_missing() { :; }\ninstall_missing mmdebstrap qemu-user-static\nmmdebstrap --architectures=arm64 bookworm out.tar\n",
		}, []string{`firmware-image/build.sh:6: command "mmdebstrap" needs Debian package arch-test`}},
		{"QEMU without its option ROMs", map[string]string{
			"firmware-image/test-boot.sh": strict + "install_missing qemu-system-arm\nqemu-system-aarch64 -M virt\n",
		}, []string{`command "qemu-system-aarch64" needs Debian package ipxe-qemu`}},
		{"both installed", map[string]string{
			"firmware-image/build.sh": strict + "install_missing mmdebstrap arch-test\nmmdebstrap bookworm out.tar\n",
		}, nil},
		{"a command no mapping names", map[string]string{
			"scripts/x.sh": strict + "frobnicate --all\n",
		}, []string{`scripts/x.sh:4: command "frobnicate" has no package`}},
		{"a command behind a wrapper and inside $(…)", map[string]string{
			"scripts/x.sh": strict + "v=$(timeout 5 frobnicate | sort)\n",
		}, []string{`command "frobnicate" has no package`}},
		{"an install the script forgot, used through $sudo", map[string]string{
			"scripts/x.sh": strict + "$sudo sfdisk x.img\n",
		}, []string{`scripts/x.sh:4: command "sfdisk" needs Debian package fdisk`}},
		{"a library's command installed by the script that sources it", map[string]string{
			"firmware-image/lib.sh":     "binfmt() { update-binfmts --enable qemu-aarch64; }\n",
			"firmware-image/build.sh":   strict + ". \"$HERE/lib.sh\"\ninstall_missing binfmt-support\nbinfmt\n",
			"packaging/other-tool.sh":   strict + "echo nothing\n",
			"firmware-image/rootfs/x":   "#!/bin/sh\nfrobnicate # runs on the gateway: not checked\n",
			"packaging/debian/postinst": "#!/bin/sh\nfrobnicate\n",
		}, nil},
		{"a library's command nobody installs", map[string]string{
			"firmware-image/lib.sh":   "binfmt() { update-binfmts --enable qemu-aarch64; }\n",
			"firmware-image/build.sh": strict + ". \"$HERE/lib.sh\"\nbinfmt\n",
		}, []string{`firmware-image/lib.sh:1: command "update-binfmts" needs Debian package binfmt-support`}},
		{"commands run in a chroot and the script's own functions", map[string]string{
			"scripts/x.sh": strict + "frob() { :; }\nchroot \"$ROOT\" frobnicate\nfrob\ncommand -v frobnicate || true\n",
		}, nil},
		{"a Makefile recipe", map[string]string{
			"Makefile": "all:\n\t@set -e; for x in a b; do \\\n\t\tfrobnicate $(X) $$x; \\\n\tdone\n",
		}, []string{`Makefile:2: command "frobnicate" has no package`}},
		{"a script that would carry on after a failed $(…)", map[string]string{
			"scripts/x.sh": "#!/usr/bin/env bash\nset -euo pipefail\nx=$(false; echo)\n",
		}, []string{`scripts/x.sh:1: no "shopt -s inherit_errexit"`}},
		{"a script without pipefail", map[string]string{
			"packaging/x.sh": "#!/bin/sh\nset -e\nshopt -s inherit_errexit\n",
		}, []string{`packaging/x.sh:1: no "set -euo pipefail"`}},
	}
	in := committedInputs(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, err := check(writeTree(t, tt.files), in)
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) != len(tt.want) {
				t.Fatalf("got %d problems %v, want %d %q", len(problems), problems, len(tt.want), tt.want)
			}
			for i, p := range problems {
				if !strings.Contains(p.String(), tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p, tt.want[i])
				}
			}
		})
	}
}

// TestCommandsMatchDpkg keeps commands.txt true: for each listed command installed on this machine,
// dpkg must say that the first package listed owns it.
func TestCommandsMatchDpkg(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("no dpkg on this machine")
	}
	paths := make(map[string]string) // command → its path here
	var candidates []string
	for cmd, pkgs := range committedInputs(t).commands {
		path, err := exec.LookPath(cmd)
		if pkgs[0] == toolchain || err != nil {
			continue
		}
		paths[cmd] = path
		candidates = append(candidates, dpkgPaths(path)...)
	}
	owners := dpkgOwners(candidates)
	checked := 0
	for cmd, path := range paths {
		owner := ""
		for _, p := range dpkgPaths(path) {
			if owner == "" {
				owner = owners[p]
			}
		}
		if owner == "" {
			t.Logf("%s: %s belongs to no Debian package here (another install), not checked", cmd, path)
			continue
		}
		checked++
		if want := committedInputs(t).commands[cmd][0]; owner != want {
			t.Errorf("commands.txt: %s comes from %s (dpkg -S %s), not %s", cmd, owner, path, want)
		}
	}
	if checked == 0 {
		t.Fatal("no command of commands.txt could be checked against dpkg")
	}
}

// dpkgPaths lists the names under which dpkg may have registered the file at path, the name scripts
// call first (binutils owns the symlink /usr/bin/readelf, its per-architecture package the target),
// then symlinks (such as alternatives) resolved, on either side of Debian's merged /usr.
func dpkgPaths(path string) []string {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil
	}
	return []string{path, real, strings.TrimPrefix(real, "/usr"), "/usr" + real}
}

// dpkgOwners asks dpkg once for the owners of paths (a path no package owns is left out).
func dpkgOwners(paths []string) map[string]string {
	out, _ := exec.Command("dpkg", append([]string{"-S"}, paths...)...).Output() // exit 1 if one is unowned
	owners := make(map[string]string)
	for _, line := range strings.Split(string(out), "\n") {
		pkg, file, ok := strings.Cut(line, ": ")
		if ok && !strings.HasPrefix(pkg, "diversion by") {
			pkg, _, _ = strings.Cut(pkg, ":") // drop an architecture qualifier
			owners[file] = pkg
		}
	}
	return owners
}

// TestFailedStepStopsScript runs bash the way build.sh ran mmdebstrap: inside a function whose output is
// captured with $(…). With firmware-image/lib.sh sourced, the failure stops the script and names the
// step; with only set -euo pipefail (the old build.sh) it carries on, which is what the issue saw.
func TestFailedStepStopsScript(t *testing.T) {
	bin := writeTree(t, map[string]string{
		"mmdebstrap": "#!/bin/sh\necho 'E: install arch-test for foreign architecture support' >&2\nexit 1\n",
	})
	lib, err := filepath.Abs(filepath.Join(repoRoot, "firmware-image/lib.sh"))
	if err != nil {
		t.Fatal(err)
	}
	const body = `
base_stage() { mmdebstrap --architectures=arm64 bookworm out.partial.tar; echo out.tar; }
base=$(base_stage)
echo "base stage done: $base"
`
	tests := []struct {
		name, prelude string
		stops         bool
	}{
		{"with lib.sh", ". " + lib + "\n", true},
		{"set -euo pipefail alone", "set -euo pipefail\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("bash", "-c", tt.prelude+body)
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			carriedOn := strings.Contains(string(out), "base stage done")
			if carriedOn == tt.stops || (err != nil) != tt.stops {
				t.Fatalf("stops=%v wanted, got err=%v, output:\n%s", tt.stops, err, out)
			}
			if tt.stops && !strings.Contains(string(out), `"mmdebstrap --architectures=arm64 bookworm out.partial.tar" failed with exit status 1`) {
				t.Errorf("the error does not name the failing step:\n%s", out)
			}
		})
	}
}
