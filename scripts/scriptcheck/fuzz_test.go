package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFuzzStepFailsOnStall runs scripts/fuzz.sh, the fuzz step of scripts/test.sh, on a target whose
// worker hangs (Go's own run of it passes, with "execs: 1 (0/sec)") and on a healthy one.
func TestFuzzStepFailsOnStall(t *testing.T) {
	if testing.Short() {
		t.Skip("fuzzes for seconds")
	}
	script, err := filepath.Abs(filepath.Join(repoRoot, "scripts/fuzz.sh"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		fails  bool
	}{
		{"FuzzStall", true},
		{"FuzzFine", false},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			cmd := exec.Command("bash", script, ".", tt.target)
			cmd.Dir = filepath.Join("testdata", "fuzzstall")
			cmd.Env = append(os.Environ(), "FUZZTIME=8s")
			out, err := cmd.CombinedOutput()
			if (err != nil) != tt.fails {
				t.Fatalf("fuzz.sh %s: err=%v, want failure=%v; output:\n%s", tt.target, err, tt.fails, out)
			}
			if tt.fails && !strings.Contains(string(out), "FAIL . FuzzStall: a fuzz worker stalled") {
				t.Errorf("the failure does not say the worker stalled:\n%s", out)
			}
		})
	}
}
