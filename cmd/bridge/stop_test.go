package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/gateway"
)

var stopRounds = flag.Int("stop-rounds", 5, "SIGTERM rounds in TestGracefulStopSignsEverything")

// TestGracefulStopSignsEverything sends SIGTERM right after the last PUBACK
// of a QoS 1 burst, round after round, and proves with `bridge export` of
// the stopped gateway that the stop itself signed every acknowledged
// reading (export found nothing left to sign): each present exactly once,
// signed, chains contiguous across the rounds.
func TestGracefulStopSignsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary for several rounds")
	}
	in := newInstance(t, "[signing]\nbatch_window = \"0s\"\n")
	// A key as slow as a small secure element (above the 2 ms per
	// signature up to which readings are signed in the commit that stores
	// them) leaves readings pending for the signer, and so for the stop.
	in.bin = testBridgeBinary(t)
	in.extraEnv = []string{"TRIBUTARY_TEST_SIGN_DELAY=3ms"}
	acked := make(map[string]bool)
	pendingAtStop := 0
	var stream string
	for round := range *stopRounds {
		// Odd rounds: a wide signing window leaves the whole burst pending.
		// Even rounds: the signer is busy when SIGTERM arrives.
		in.replaceConfig(`batch_window = "[^"]*"`, fmt.Sprintf("batch_window = %q", []string{"0s", "300ms"}[round%2]))
		from := len(in.logs())
		in.start()
		for _, id := range publishBurst(t, in, round, 250) {
			acked[id] = true
		}
		if code := in.term(); code != 0 {
			t.Fatalf("round %d: exit status %d after SIGTERM\n%s", round, code, in.logs()[from:])
		}
		logs := in.logs()[from:]
		pending := logInt(t, logs, `signing pending readings.* pending=(\d+)`)
		took := "?"
		if m := regexp.MustCompile(`signer drained.* took=(\S+)`).FindStringSubmatch(logs); m != nil {
			took = m[1]
		}
		t.Logf("round %d: %d readings pending at SIGTERM, signed by the stop in %s", round, pending, took)
		pendingAtStop += pending
		if n := logInt(t, logs, `signer drained.* unsigned=(\d+)`); n != 0 {
			t.Errorf("round %d: %d readings unsigned after the drain", round, n)
		}
		if last := lastLine(logs); !strings.Contains(last, "gateway stopped") || !strings.Contains(last, "exit_status=0") {
			t.Errorf("round %d: last log line %q, want gateway stopped with exit_status=0", round, last)
		}
		if stream == "" {
			stream = in.address() + "/crash/data"
		}
		msgs, stderr, code := in.exportAll(stream)
		if code != 0 {
			t.Fatalf("round %d: export: exit status %d\n%s", round, code, stderr)
		}
		if n := exportSigned(t, stderr); n > 0 {
			t.Errorf("round %d: the stop left %d readings for export to sign", round, n)
		}
		checkExport(t, msgs, acked, crashPublishers)
		if t.Failed() {
			t.Fatalf("round %d failed\n%s", round, logs)
		}
	}
	if pendingAtStop == 0 {
		t.Fatal("no reading was pending at any SIGTERM: the test proves nothing")
	}
	t.Logf("%d rounds, %d readings acknowledged, %d pending at SIGTERM and signed by the stop", *stopRounds, len(acked), pendingAtStop)
}

// TestGracefulStopOutOfTime stops a gateway whose signer is too slow to
// sign what is pending within stop_timeout: it keeps what it signed, the
// last log line counts the unsigned readings and say why, the exit status
// is 3, and the next start signs the rest into the same chains.
func TestGracefulStopOutOfTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	in := newInstance(t, "[signing]\nbatch_window = \"1h\"\n") // nothing is signed while running
	in.prependConfig(`stop_timeout = "1s"`)
	in.bin = testBridgeBinary(t)
	in.extraEnv = []string{"TRIBUTARY_TEST_SIGN_DELAY=20ms"} // 200 readings take 4s to sign
	in.start()
	acked := make(map[string]bool)
	for _, id := range publishBurst(t, in, 0, 50) {
		acked[id] = true
	}
	if code := in.term(); code != exitUnsigned {
		t.Fatalf("exit status %d, want %d\n%s", code, exitUnsigned, in.logs())
	}
	logs := in.logs()
	stopped := lastLine(logs)
	signed := logInt(t, logs, `signer drained.* signed=(\d+)`)
	unsigned := logInt(t, stopped, `unsigned=(\d+)`)
	if signed == 0 || unsigned == 0 || signed+unsigned != len(acked) {
		t.Errorf("the stop signed %d and left %d of %d acknowledged readings; want some of each, adding up", signed, unsigned, len(acked))
	}
	if !strings.Contains(stopped, "gateway stopped with stored readings unsigned") ||
		!strings.Contains(stopped, `reason="stop_timeout (1s) reached"`) || !strings.Contains(stopped, "exit_status=3") {
		t.Errorf("last log line %q, want the gateway stopped with unsigned=%d, the reason and exit_status=3", stopped, unsigned)
	}

	// The next start, with an ordinary binary, signs them at once.
	in.bin, in.extraEnv = "", nil
	from := len(in.logs())
	in.start()
	stream := in.address() + "/crash/data"
	msgs := waitForExport(t, in, stream, len(acked)) // from the running gateway
	in.stop()
	checkExport(t, msgs, acked, crashPublishers)
	if n := logInt(t, in.logs()[from:], `signing pending readings.* pending=(\d+)`); n != 0 {
		t.Errorf("%d readings still pending at the second stop: the start did not sign them", n)
	}
}

// publishBurst publishes perClient QoS 1 readings from each of
// crashPublishers clients, all in flight at once, and returns the IDs of
// those acknowledged once every PUBACK is in.
func publishBurst(t *testing.T, in *instance, round, perClient int) []string {
	t.Helper()
	var (
		mu  sync.Mutex
		ids []string
		wg  sync.WaitGroup
	)
	for p := range crashPublishers {
		client := connect(t, in.mqtt, fmt.Sprintf("pub-%d", p))
		wg.Go(func() {
			defer client.Disconnect(0)
			toks := make([]mqtt.Token, perClient)
			for i := range toks {
				payload, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("s%d-p%d-%d", round, p, i)})
				toks[i] = client.Publish("crash/data", 1, false, payload)
			}
			for i, tok := range toks {
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					t.Errorf("publish %d of pub-%d: %v", i, p, tok.Error())
					continue
				}
				mu.Lock()
				ids = append(ids, fmt.Sprintf("s%d-p%d-%d", round, p, i))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ids
}

// logInt returns the number the regexp's group matches in the last
// matching log line, failing the test if there is none.
func logInt(t *testing.T, logs, expr string) int {
	t.Helper()
	all := regexp.MustCompile(expr).FindAllStringSubmatch(logs, -1)
	if len(all) == 0 {
		t.Fatalf("no log line matches %s\n%s", expr, logs)
	}
	n, err := strconv.Atoi(all[len(all)-1][1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func lastLine(logs string) string {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	return lines[len(lines)-1]
}

// replaceConfig replaces what expr matches in the config file.
func (in *instance) replaceConfig(expr, repl string) {
	in.t.Helper()
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	cfg = regexp.MustCompile(expr).ReplaceAll(cfg, []byte(repl))
	if err := os.WriteFile(in.config, cfg, 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// prependConfig puts top-level keys in front of the config's tables.
func (in *instance) prependConfig(lines string) {
	in.t.Helper()
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	if err := os.WriteFile(in.config, append([]byte(lines+"\n"), cfg...), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

var testBinary struct {
	once sync.Once
	path string
	err  error
}

// testBridgeBinary builds the bridge with the bridgetest tag, whose key
// honours TRIBUTARY_TEST_SIGN_DELAY (testkey_bridgetest.go), once.
func testBridgeBinary(t *testing.T) string {
	t.Helper()
	testBinary.once.Do(func() {
		testBinary.path = filepath.Join(filepath.Dir(bridgeBinary), "bridge-test")
		testBinary.err = goBuild(testBinary.path, "-tags", "bridgetest")
	})
	if testBinary.err != nil {
		t.Fatal(testBinary.err)
	}
	return testBinary.path
}

// The default stop_timeout leaves systemd's TimeoutStopSec room for the
// broker to close before it and for storage to close after it.
func TestStopTimeoutBelowTimeoutStopSec(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", "bridge.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\S+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("systemd/bridge.service sets no TimeoutStopSec")
	}
	unitStop, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", m[1], err)
	}
	if margin := unitStop - gateway.DefaultStopTimeout; margin < 10*time.Second {
		t.Errorf("stop_timeout default %s leaves %s of TimeoutStopSec=%s, want at least 10s", gateway.DefaultStopTimeout, margin, unitStop)
	}
}

// A second SIGTERM during a long drain ends the process at once; what is
// left unsigned is signed at the next start, as after kill -9.
func TestSecondSignalEndsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	in := newInstance(t, "[signing]\nbatch_window = \"1h\"\n")
	in.bin = testBridgeBinary(t)
	in.extraEnv = []string{"TRIBUTARY_TEST_SIGN_DELAY=100ms"} // 100 readings: 10s of signing
	in.start()
	acked := make(map[string]bool)
	for _, id := range publishBurst(t, in, 0, 25) {
		acked[id] = true
	}
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(in.logs(), "signing pending readings") {
		if time.Now().After(deadline) {
			t.Fatalf("no drain within 10s of SIGTERM\n%s", in.logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(3 * time.Second):
		t.Fatalf("still running 3s after the second SIGTERM\n%s", in.logs())
	}
	if st := in.cmd.ProcessState; st.Success() || strings.Contains(lastLine(in.logs()), "gateway stopped") {
		t.Fatalf("exit %v after a second SIGTERM with last line %q; want an immediate end", st, lastLine(in.logs()))
	}
	in.bin, in.extraEnv = "", nil
	in.start()
	msgs := waitForExport(t, in, in.address()+"/crash/data", len(acked))
	in.stop()
	checkExport(t, msgs, acked, crashPublishers)
}
