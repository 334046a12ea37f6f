package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// bridgeBinary is the real bridge binary, built once by TestMain.
var bridgeBinary string

// buildBridge compiles ./cmd/bridge into dir.
func buildBridge(dir string) (string, error) {
	bin := filepath.Join(dir, "bridge")
	return bin, goBuild(bin, bridgeBuildFlags...)
}

// bridgeBuildFlags are the build flags of bridgeBinary: a test binary built
// with -tags pkcs11 sets them so that the bridges under test have the
// PKCS#11 backend too (seal_pkcs11_test.go).
var bridgeBuildFlags []string

// goBuild compiles ./cmd/bridge to bin with extra build flags.
func goBuild(bin string, flags ...string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", bin, ".")...)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", strings.Join(flags, " "), err)
	}
	return nil
}

// instance is one bridge process under test.
type instance struct {
	t        testing.TB
	dir      string
	config   string
	mqtt     string
	http     string
	cmd      *exec.Cmd
	mu       sync.Mutex
	stderr   bytes.Buffer
	exited   chan struct{}
	exitErr  error
	extraEnv []string
	bin      string // the binary to run; empty means bridgeBinary

	// overlayTCP and overlayQUIC are the bound overlay ports, once started.
	overlayTCP, overlayQUIC string
}

// loopbackOverlay keeps a test bridge's overlay on 127.0.0.1 with random
// ports and no LAN discovery, so parallel tests do not see each other.
const loopbackOverlay = `[overlay]
listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
mdns = false
nat = false
`

// newInstance writes a config for a bridge in a fresh state directory.
// extra is appended to the config file; without an [overlay] table in it
// the overlay stays on loopback (loopbackOverlay). The MQTT and HTTP
// listeners bind port 0: start reads the bound addresses from the log and
// pins them in the config, so a restarted bridge keeps its addresses and
// no other process can take a port between picking and binding it.
func newInstance(t testing.TB, extra string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, dir: dir, config: filepath.Join(dir, "bridge.toml")}
	cfg := fmt.Sprintf(`state_dir = %q
[log]
level = "debug"
%s
%s
%s`, filepath.Join(dir, "state"), mqttTable(anyPort), httpTable(anyPort), extra)
	if !strings.Contains(extra, "[overlay]") {
		cfg += "\n" + loopbackOverlay
	}
	if !strings.Contains(extra, "[websocket]") {
		cfg += "\n[websocket]\naddress = \"\"\n" // its default port would collide between bridges
	}
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.dumpLogsOnFailure)
	return in
}

// anyPort lets the kernel pick a free port at bind time.
const anyPort = "127.0.0.1:0"

func mqttTable(addr string) string {
	return fmt.Sprintf("[[mqtt.listener]]\ntype = \"tcp\"\naddress = %q", addr)
}

func httpTable(addr string) string { return fmt.Sprintf("[http]\naddress = %q", addr) }

var (
	mqttListeningLog    = regexp.MustCompile(`msg="mqtt listener ready" component=mqtt type=tcp address=(\S+)`)
	httpListeningLog    = regexp.MustCompile(`msg="http api listening" component=http address=(\S+)`)
	overlayListeningLog = regexp.MustCompile(`msg="overlay node started" .* listen=\[([^\]]*)\]`)
	overlayTCPPort      = regexp.MustCompile(`^/ip4/127\.0\.0\.1/tcp/(\d+)$`)
	overlayQUICPort     = regexp.MustCompile(`^/ip4/127\.0\.0\.1/udp/(\d+)/quic-v1$`)
)

// start runs the bridge and waits until its MQTT listener is bound and
// accepts connections; the first start pins the bound ports in the config.
func (in *instance) start() {
	in.t.Helper()
	bin := in.bin
	if bin == "" {
		bin = bridgeBinary
	}
	in.cmd = exec.Command(bin, "run", "--config", in.config)
	in.cmd.Env = append(os.Environ(), in.extraEnv...)
	in.cmd.Stdout = io.Discard
	in.cmd.Stderr = lockedWriter{&in.mu, &in.stderr}
	in.exited = make(chan struct{})
	from := len(in.logs())
	if err := in.cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	go func() {
		in.exitErr = in.cmd.Wait()
		close(in.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-in.exited:
			in.t.Fatalf("bridge exited early: %v\n%s", in.exitErr, in.logs())
		default:
		}
		if in.readAddrs(in.logs()[from:]) {
			if c, err := net.DialTimeout("tcp", in.mqtt, 100*time.Millisecond); err == nil {
				c.Close()
				in.pinPorts()
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	in.t.Fatalf("bridge MQTT not up within 30s\n%s", in.logs())
}

// readAddrs takes the bound MQTT, HTTP and overlay addresses from this
// run's log; it reports whether MQTT and HTTP are bound.
func (in *instance) readAddrs(logs string) bool {
	m, h := mqttListeningLog.FindStringSubmatch(logs), httpListeningLog.FindStringSubmatch(logs)
	if m == nil || h == nil {
		return false
	}
	if in.mqtt != m[1] || in.http != h[1] { // a restart binds the pinned ports again: no write, for goroutines still reading them
		in.mqtt, in.http = m[1], h[1]
	}
	if o := overlayListeningLog.FindStringSubmatch(logs); o != nil {
		for _, addr := range strings.Fields(o[1]) {
			if p := overlayTCPPort.FindStringSubmatch(addr); p != nil && in.overlayTCP != p[1] {
				in.overlayTCP = p[1]
			}
			if p := overlayQUICPort.FindStringSubmatch(addr); p != nil && in.overlayQUIC != p[1] {
				in.overlayQUIC = p[1]
			}
		}
	}
	return true
}

// pinPorts writes the ports bound on port 0 into the config file.
func (in *instance) pinPorts() {
	in.t.Helper()
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	pins := []string{mqttTable(anyPort), mqttTable(in.mqtt), httpTable(anyPort), httpTable(in.http)}
	if in.overlayTCP != "" {
		pins = append(pins, `"/ip4/127.0.0.1/tcp/0"`, fmt.Sprintf(`"/ip4/127.0.0.1/tcp/%s"`, in.overlayTCP))
	}
	if in.overlayQUIC != "" {
		pins = append(pins, `"/ip4/127.0.0.1/udp/0/quic-v1"`, fmt.Sprintf(`"/ip4/127.0.0.1/udp/%s/quic-v1"`, in.overlayQUIC))
	}
	r := strings.NewReplacer(pins...)
	if err := os.WriteFile(in.config, []byte(r.Replace(string(cfg))), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// setMQTT configures the MQTT listener on addr instead of port 0.
func (in *instance) setMQTT(addr string) {
	in.t.Helper()
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	in.mqtt = addr
	if err := os.WriteFile(in.config, []byte(strings.Replace(string(cfg), mqttTable(anyPort), mqttTable(addr), 1)), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// bootstrapAddr is the multiaddr other bridges bootstrap from: this
// bridge's bound overlay port on the given transport ("tcp" or "quic").
func (in *instance) bootstrapAddr(transport string) string {
	in.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); in.overlayTCP == "" && in.overlayQUIC == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			in.t.Fatalf("no overlay listen addresses in the log:\n%s", in.logs())
		}
		in.readAddrs(in.logs())
	}
	if transport == "quic" {
		return fmt.Sprintf("/ip4/127.0.0.1/udp/%s/quic-v1/p2p/%s", in.overlayQUIC, in.peerID())
	}
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%s/p2p/%s", in.overlayTCP, in.peerID())
}

// testLogDir, when set, receives the full log of every bridge of a failed
// test; otherwise the failure output carries the tail of each log.
var testLogDir = os.Getenv("BRIDGE_TEST_LOGS")

// dumpLogsOnFailure shows what a failed test's bridge logged, without
// Badger's debug chatter.
func (in *instance) dumpLogsOnFailure() {
	if !in.t.Failed() {
		return
	}
	var kept []string
	for line := range strings.Lines(in.logs()) {
		if !strings.Contains(line, "msg=badger") {
			kept = append(kept, line)
		}
	}
	if testLogDir != "" {
		name := filepath.Join(testLogDir, strings.NewReplacer("/", "_").Replace(in.t.Name())+"-"+filepath.Base(in.dir)+".log")
		if err := os.WriteFile(name, []byte(strings.Join(kept, "")), 0o644); err == nil {
			in.t.Logf("bridge log of %s written to %s", in.dir, name)
			return
		}
	}
	const tail = 40
	in.t.Logf("last %d log lines of the bridge in %s:\n%s", min(tail, len(kept)), in.dir, strings.Join(kept[max(0, len(kept)-tail):], ""))
}

func (in *instance) logs() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stderr.String()
}

// kill sends SIGKILL: no shutdown code runs, as in a power cut of the process.
func (in *instance) kill() {
	_ = in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.exited
}

// stop sends SIGTERM and expects a clean exit.
func (in *instance) stop() {
	in.t.Helper()
	if code := in.term(); code != 0 {
		in.t.Fatalf("bridge exit after SIGTERM: %v\n%s", in.exitErr, in.logs())
	}
}

// term sends SIGTERM and returns the exit status.
func (in *instance) term() int {
	in.t.Helper()
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
		return in.cmd.ProcessState.ExitCode()
	case <-time.After(60 * time.Second):
		in.kill()
		in.t.Fatalf("bridge did not exit within 60s of SIGTERM\n%s", in.logs())
		return -1
	}
}

// bridgeCmd runs a bridge subcommand against this instance's config.
func (in *instance) bridgeCmd(args ...string) (string, error) {
	out, errs, code := runBridge(args...)
	if code != 0 {
		return out, fmt.Errorf("bridge %s: exit status %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out, nil
}

// runBridge runs the bridge binary and returns its output and exit status.
func runBridge(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(bridgeBinary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		return "", err.Error(), -1
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// address returns the gateway's publisher address via `bridge key show`.
func (in *instance) address() string {
	in.t.Helper()
	out, err := in.bridgeCmd("key", "show", "--config", in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	addr, _, _ := strings.Cut(strings.TrimSpace(out), " ")
	return addr
}

// export runs `bridge export` and decodes the raw output.
func (in *instance) export(stream string) []*streamr.StreamMessage {
	in.t.Helper()
	msgs, stderr, code := in.exportAll(stream)
	if code != 0 {
		in.t.Fatalf("bridge export --stream %s: exit status %d\n%s", stream, code, stderr)
	}
	return msgs
}

// exportAll runs `bridge export` with extra flags and returns the decoded
// output, stderr and the exit status.
func (in *instance) exportAll(stream string, flags ...string) ([]*streamr.StreamMessage, string, int) {
	in.t.Helper()
	return exportWith(in.t, in.config, filepath.Join(in.dir, "export.raw"), stream, flags...)
}

// exportWith runs `bridge export --config config` into file and returns
// the decoded output, stderr and the exit status.
func exportWith(t testing.TB, config, file, stream string, flags ...string) ([]*streamr.StreamMessage, string, int) {
	t.Helper()
	_ = os.Remove(file)
	args := append([]string{"export", "--config", config, "--stream", stream, "-o", file}, flags...)
	_, stderr, code := runBridge(args...)
	f, err := os.Open(file)
	if os.IsNotExist(err) && code != 0 {
		return nil, stderr, code
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs []*streamr.StreamMessage
	rr := streamr.NewRawReader(f, 0)
	for {
		m, err := rr.Read()
		if err == io.EOF {
			return msgs, stderr, code
		}
		if err != nil {
			t.Fatalf("export of %s: %v", stream, err)
		}
		msgs = append(msgs, m)
	}
}

// metric reads one un-labelled metric value from /metrics.
func (in *instance) metric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.http+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			_, err := fmt.Sscan(rest, &v)
			return v, err
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
