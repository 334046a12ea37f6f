package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/tributary-iot/tributary/gateway"
)

// Every subcommand answers --help and -h with its usage on stdout and exit
// status 0, and `bridge help COMMAND` prints the same.
func TestHelpOfEverySubcommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	var cases [][]string
	for _, c := range commands {
		cases = append(cases, []string{c.name, "--help"}, []string{c.name, "-h"}, []string{"help", c.name})
	}
	for sub := range keySummaries {
		cases = append(cases, []string{"key", sub, "--help"})
	}
	cases = append(cases, []string{"check-config", "bridge.toml", "--help"}, []string{"--help"}, []string{"-h"}, []string{"help"})
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, stderr, code := runBridge(args...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			want := "usage: bridge"
			if name := strings.TrimPrefix(strings.Join(args, " "), "help "); !strings.HasPrefix(name, "-") && name != "help" {
				want = "usage: bridge " + strings.Fields(name)[0]
			}
			if !strings.HasPrefix(stdout, want) {
				t.Fatalf("stdout does not start with %q:\n%s", want, stdout)
			}
			if strings.Contains(stdout, "[log]") {
				t.Fatalf("printed the config example instead of usage:\n%s", stdout)
			}
		})
	}
}

// `bridge help` lists every subcommand, the key subcommands included.
func TestHelpListsEveryCommand(t *testing.T) {
	var out bytes.Buffer
	if err := runCommand(t.Context(), []string{"help"}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"run", "check-config", "key", "id", "export", "passwd", "config-example", "version", "help", "provision-ecc"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not list %s:\n%s", name, out.String())
		}
	}
	err := runCommand(t.Context(), []string{"frobnicate"}, nil, &out, &out)
	if exitCode(err) != 2 {
		t.Errorf("unknown command: %v (exit %d), want a usage error", err, exitCode(err))
	}
}

// From a pipe, passwd reads one line; an empty one is refused.
func TestPasswdFromPipe(t *testing.T) {
	var out, errb bytes.Buffer
	if err := runCommand(t.Context(), []string{"passwd"}, strings.NewReader("s3cret\n"), &out, &errb); err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret")); err != nil {
		t.Fatalf("hash %q does not match: %v", hash, err)
	}
	if err := runCommand(t.Context(), []string{"passwd"}, strings.NewReader("\n"), &out, &errb); err == nil {
		t.Fatal("empty password accepted")
	}
}

// On a terminal, passwd prompts twice and the typed password is not echoed.
func TestPasswdOnTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	master, slave := openPTY(t)
	cmd := exec.Command(bridgeBinary, "passwd")
	var out bytes.Buffer
	cmd.Stdin, cmd.Stderr, cmd.Stdout = slave, slave, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	screen := &lockedBuffer{}
	go func() { _, _ = io.Copy(screen, master) }()
	for _, prompt := range []string{"Password: ", "Repeat password: "} {
		screen.waitFor(t, prompt)
		waitNoEcho(t, slave)
		if _, err := master.WriteString("hunter2\n"); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("passwd: %v\n%s", err, screen.String())
	}
	if err := bcrypt.CompareHashAndPassword([]byte(strings.TrimSpace(out.String())), []byte("hunter2")); err != nil {
		t.Fatalf("hash %q: %v", out.String(), err)
	}
	if s := screen.String(); strings.Contains(s, "hunter2") {
		t.Fatalf("terminal showed the password: %q", s)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q: %q", s, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// waitNoEcho waits until the program turned the terminal's echo off, so
// what the test types next would show if it did not.
func waitNoEcho(t *testing.T, tty *os.File) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if st.Lflag&unix.ECHO == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the terminal's echo stayed on")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// `bridge id` gives the same identity from a running gateway's HTTP API
// and, once it stopped, from its state directory; a second gateway can
// bootstrap from the address it prints.
func TestIDCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real bridges")
	}
	a := newInstance(t, overlayTable("tcp", ""))
	if _, stderr, code := runBridge("id", "--config", a.config); code != 1 || !strings.Contains(stderr, "start the gateway once") {
		t.Fatalf("id before the first start: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(a.dir, "state")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("id created the state directory (%v)", err)
	}
	a.start()
	running := readID(t, a)
	if !strings.HasPrefix(running.Source, "running gateway") {
		t.Fatalf("source %q, want the running gateway", running.Source)
	}
	want := fmt.Sprintf("/ip4/127.0.0.1/tcp/%s/p2p/%s", a.overlayTCP, running.PeerID)
	if running.PeerID == "" || !contains(running.Addrs, want) {
		t.Fatalf("running: peer %q addrs %v, want %s", running.PeerID, running.Addrs, want)
	}
	if running.Publisher != a.address() || running.KeyType != "ECDSA_SECP256K1_EVM" {
		t.Fatalf("running: publisher %s (%s), want %s", running.Publisher, running.KeyType, a.address())
	}

	// A second gateway joins with the printed address and gets A's readings.
	b := newInstance(t, overlayTable("tcp", want)+fmt.Sprintf("[[subscribe]]\nstream = \"%s/id/data\"\ntopic = \"got\"\n", running.Publisher))
	b.start()
	defer b.stop()
	got := subscribeAll(t, b, "got")
	publishN(t, a, "id/data", 1)
	waitDeliveries(t, got, 1, b)

	a.stop()
	stored := readID(t, a)
	if !strings.HasPrefix(stored.Source, "state directory") {
		t.Fatalf("source %q, want the state directory", stored.Source)
	}
	if stored.PeerID != running.PeerID || stored.Publisher != running.Publisher || !contains(stored.Addrs, want) {
		t.Fatalf("stopped: %+v, want peer %s and address %s", stored, running.PeerID, want)
	}
	text, _, code := runBridge("id", "--config", a.config)
	if code != 0 || !strings.Contains(text, "peer ID    "+running.PeerID) || !strings.Contains(text, "address    "+want) {
		t.Fatalf("text output (exit %d):\n%s", code, text)
	}
}

func readID(t *testing.T, in *instance) gateway.Identity {
	t.Helper()
	stdout, stderr, code := runBridge("id", "--json", "--config", in.config)
	if code != 0 {
		t.Fatalf("bridge id: exit %d: %s", code, stderr)
	}
	var id gateway.Identity
	if err := json.Unmarshal([]byte(stdout), &id); err != nil {
		t.Fatalf("bridge id --json: %v\n%s", err, stdout)
	}
	return id
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
