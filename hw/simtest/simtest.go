// Package simtest starts the hardware simulators the key backend tests run
// against: swtpm (TPM 2.0) and SoftHSM2 (PKCS#11), each in its own
// temporary directory, stopped and removed when the test ends.
//
// When a simulator is not installed the test is skipped, unless
// TRIBUTARY_REQUIRE_TOOLS is set (CI): then it fails.
package simtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RequireToolsEnv, when set, turns a missing simulator into a test failure.
const RequireToolsEnv = "TRIBUTARY_REQUIRE_TOOLS"

// LookTool returns the path of an external tool, skipping the test when it
// is absent and failing it when RequireToolsEnv is set.
func LookTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv(RequireToolsEnv) != "" {
		t.Fatalf("%s is required (%s is set) but not installed: %v", name, RequireToolsEnv, err)
	}
	t.Skipf("%s not installed: %v", name, err)
	return ""
}

// SWTPM is a running swtpm TPM 2.0 simulator listening on a unix socket.
type SWTPM struct {
	Socket   string // data socket: raw TPM 2.0 command frames
	StateDir string // persistent TPM state (survives Restart)
	cmd      *exec.Cmd
	stderr   bytes.Buffer
	tb       testing.TB
}

// StartSWTPM starts a fresh swtpm and stops it when the test ends.
func StartSWTPM(t testing.TB) *SWTPM {
	t.Helper()
	LookTool(t, "swtpm")
	dir := t.TempDir()
	s := &SWTPM{Socket: filepath.Join(dir, "tpm.sock"), StateDir: filepath.Join(dir, "state"), tb: t}
	if err := os.Mkdir(s.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *SWTPM) start() {
	s.tb.Helper()
	_ = os.Remove(s.Socket)
	s.stderr.Reset()
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+s.StateDir,
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+s.Socket+".ctrl",
		"--flags", "not-need-init,startup-clear")
	s.cmd.Stderr = &s.stderr
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("start swtpm: %v", err)
	}
	if err := waitFor(s.Socket, 10*time.Second); err != nil {
		s.Stop()
		s.tb.Fatalf("swtpm did not come up: %v; stderr: %s", err, s.stderr.String())
	}
}

// Stop kills the simulator and waits for it; the state directory stays.
func (s *SWTPM) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart stops and starts the simulator on the same state, as a reboot of
// the device would (transient objects and PCRs reset, keys' seeds kept).
func (s *SWTPM) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

// Replace stops the simulator, wipes its state and starts a fresh TPM on
// the same socket, as if the device's TPM were swapped or cleared: new
// seeds, so nothing sealed to the old one loads.
func (s *SWTPM) Replace() {
	s.tb.Helper()
	s.Stop()
	if err := os.RemoveAll(s.StateDir); err != nil {
		s.tb.Fatal(err)
	}
	if err := os.Mkdir(s.StateDir, 0o700); err != nil {
		s.tb.Fatal(err)
	}
	s.start()
}

func waitFor(path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		// The socket file appears at bind, before swtpm listens: only a
		// successful connection says it is ready.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not accepting connections within %v", path, timeout)
		case <-tick.C:
		}
	}
}

// SoftHSM is an initialised SoftHSM2 token in a temporary token directory.
type SoftHSM struct {
	Module string // PKCS#11 module path
	Conf   string // SOFTHSM2_CONF value; set in the test's environment
	Label  string // token label
	PIN    string // user PIN
}

// softHSMModules are where distributions install the SoftHSM2 module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// StartSoftHSM initialises a token labelled label in a temporary directory
// and points SOFTHSM2_CONF at it for the rest of the test (so the test must
// not run in parallel with others in the process).
func StartSoftHSM(t testing.TB, label string) *SoftHSM {
	t.Helper()
	util := LookTool(t, "softhsm2-util")
	module := ""
	for _, m := range softHSMModules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	if module == "" {
		err := errors.New("libsofthsm2.so not found")
		if os.Getenv(RequireToolsEnv) != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	h := &SoftHSM{Module: module, Conf: conf, Label: label, PIN: "5678"}
	out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--so-pin", "1234", "--pin", h.PIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return h
}
