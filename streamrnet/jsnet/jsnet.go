// Package jsnet runs a real Streamr Network of two JS nodes (the official
// @streamr/trackerless-network 103.3.1, installed by scripts/test.sh into
// streamrnet/testdata/jsnode) on 127.0.0.1 for tests: node A is the entry
// point and accepts proxy connections, node B is an ordinary node of the
// same stream partitions that verifies every message it gets with
// @streamr/utils and can publish messages signed in JS.
package jsnet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Event is one line the JS network reports.
type Event struct {
	Event          string  `json:"event"`
	Node           string  `json:"node"`
	Proxy          string  `json:"proxy"`
	NodeA          string  `json:"nodeA"`
	StreamPart     string  `json:"streamPart"`
	Publisher      string  `json:"publisher"`
	Timestamp      int64   `json:"timestamp"`
	SequenceNumber int32   `json:"sequenceNumber"`
	Chain          string  `json:"chain"`
	Prev           []int64 `json:"prev"`
	Content        string  `json:"content"`
	SignatureValid *bool   `json:"signatureValid"`
	TamperedValid  *bool   `json:"tamperedValid"`
	VerifyError    string  `json:"verifyError"`
	Count          int     `json:"count"`
	Seconds        float64 `json:"seconds"`
	Error          string  `json:"error"`

	// Key exchange (issue 18): message events of encrypted content carry
	// Encrypted and GroupKeyID (Content is the plaintext once decrypted);
	// keyrequest/keyrefused/keyanswered/keyresponse/keyrequested/groupkey
	// events name the parties.
	Encrypted   bool     `json:"encrypted"`
	GroupKeyID  string   `json:"groupKeyId"`
	GroupKeyIDs []string `json:"groupKeyIds"`
	Requester   string   `json:"requester"`
	Recipient   string   `json:"recipient"`
	RequestID   string   `json:"requestId"`
	Stranger    string   `json:"stranger"`
}

// Network is a running JS network.
type Network struct {
	t         testing.TB
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	events    chan Event
	done      chan struct{}
	Ports     [2]int // A (proxy) and B
	ProxyURL  string
	Publisher string // address of B's JS signing key
	Stranger  string // address of B's second identity, for key requests nobody allowed
	NodeA     string // node ID of A in hex
	mu        sync.Mutex
	stderr    []byte
}

// Dir is the JS harness directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "jsnode")
}

// Skip skips t when the npm packages are not installed, unless
// TRIBUTARY_REQUIRE_TOOLS is set (CI), where that fails it.
func Skip(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real Streamr JS nodes")
	}
	_, errNode := exec.LookPath("node")
	_, errMod := os.Stat(filepath.Join(Dir(), "node_modules", "@streamr", "trackerless-network"))
	if errNode == nil && errMod == nil {
		return
	}
	if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
		t.Fatalf("Streamr JS nodes unavailable (node: %v, packages: %v) and TRIBUTARY_REQUIRE_TOOLS is set", errNode, errMod)
	}
	t.Skip("node or the Streamr npm packages are missing: run scripts/test.sh (npm ci in streamrnet/testdata/jsnode)")
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that are free now.
// The JS nodes need their ports before they start (each is the other's
// entry point), so the ports are closed again before use. They are drawn
// below Linux's ephemeral range (32768-60999), which is where every port-0
// listener and outgoing connection of other tests takes its port, so none
// of those can take one in between (the collision that once failed CI).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	const low, high = 20000, 32768
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no free port in %d-%d after %d tries", low, high, tries)
		}
		port := low + rand.IntN(high-low)
		if seen[port] {
			continue
		}
		seen[port] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken
		}
		l.Close()
		ports = append(ports, port)
	}
	return ports
}

// Start runs the network on the given ports (A, B) with the stream
// partitions ("streamId#partition") joined, and stops it at the end of t.
func Start(t testing.TB, ports [2]int, streamParts ...string) *Network {
	t.Helper()
	Skip(t)
	args := []string{"--require", "./loopback.cjs", "network.mjs", fmt.Sprint(ports[0]), fmt.Sprint(ports[1])}
	n := start(t, Dir(), append(args, streamParts...))
	n.Ports = ports
	return n
}

// SDKDir is the directory of the full Streamr SDK's subscriber script.
func SDKDir() string { return filepath.Join(Dir(), "..", "sdk") }

// SDKEnv is the variable that turns the full SDK's tests on: its install
// (sqlite3 compiled from source, ~150 MB) does not fit CI's time.
const SDKEnv = "TRIBUTARY_STREAMR_SDK"

// StartSDK runs a full @streamr/sdk StreamrClient subscribed to one stream
// partition, joined through net's node A and serving WebSocket on port;
// its "message" events are what the SDK delivered (after its own
// signature checks). It skips t unless TRIBUTARY_STREAMR_SDK is set.
func StartSDK(t testing.TB, net *Network, port int, streamID string, partition int) *Network {
	t.Helper()
	return StartSDKAs(t, net, port, streamID, partition, "")
}

// StartSDKAs is StartSDK with the client's private key (hex, no 0x; ""
// for a random one): a subscriber the publisher may list. Its Publisher
// is the client's address.
func StartSDKAs(t testing.TB, net *Network, port int, streamID string, partition int, privateKey string) *Network {
	t.Helper()
	if os.Getenv(SDKEnv) == "" {
		t.Skipf("the full Streamr SDK test runs with %s=1 after (cd streamrnet/testdata/sdk && npm ci)", SDKEnv)
	}
	if _, err := os.Stat(filepath.Join(SDKDir(), "node_modules", "@streamr", "sdk")); err != nil {
		t.Fatalf("%s is set but the SDK is not installed: (cd streamrnet/testdata/sdk && npm ci): %v", SDKEnv, err)
	}
	return start(t, SDKDir(), []string{"--require", "../jsnode/loopback.cjs", "subscriber.mjs",
		net.NodeA, fmt.Sprint(net.Ports[0]), fmt.Sprint(port), streamID, fmt.Sprint(partition), privateKey})
}

func start(t testing.TB, dir string, args []string) *Network {
	t.Helper()
	cmd := exec.Command("node", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LOG_LEVEL=warn")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &Network{t: t, cmd: cmd, stdin: stdin, events: make(chan Event, 100000), done: make(chan struct{})}
	cmd.Stderr = (*stderrBuf)(n)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start JS network: %v", err)
	}
	go n.read(stdout)
	t.Cleanup(n.Stop)
	ready := n.Wait(60*time.Second, func(e Event) bool { return e.Event == "ready" })
	n.ProxyURL, n.Publisher, n.NodeA, n.Stranger = ready.Proxy, ready.Publisher, ready.NodeA, ready.Stranger
	return n
}

type stderrBuf Network

func (b *stderrBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.stderr) < 64<<10 {
		b.stderr = append(b.stderr, p...)
	}
	return len(p), nil
}

func (n *Network) read(r io.Reader) {
	defer close(n.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			// A log line: kept with stderr for the failure message.
			(*stderrBuf)(n).Write(append(sc.Bytes(), '\n'))
			continue
		}
		n.events <- e
	}
}

// Send sends a command (see network.mjs).
func (n *Network) Send(cmd map[string]any) {
	n.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := n.stdin.Write(append(b, '\n')); err != nil {
		n.t.Fatalf("JS network command: %v", err)
	}
}

// Wait returns the first event that matches, failing t after timeout or
// when the network reports an error or exits.
func (n *Network) Wait(timeout time.Duration, match func(Event) bool) Event {
	n.t.Helper()
	e, err := n.Next(timeout, match)
	if err != nil {
		n.t.Fatal(err)
	}
	return e
}

// Next is Wait returning an error instead of failing.
func (n *Network) Next(timeout time.Duration, match func(Event) bool) (Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		select {
		case e := <-n.events:
			if e.Event == "error" {
				return e, fmt.Errorf("JS network: %s", e.Error)
			}
			if match(e) {
				return e, nil
			}
		case <-n.done:
			return Event{}, fmt.Errorf("JS network exited: %s", n.stderrText())
		case <-ctx.Done():
			return Event{}, fmt.Errorf("JS network: no awaited event within %s; stderr: %s", timeout, n.stderrText())
		}
	}
}

func (n *Network) stderrText() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return string(n.stderr)
}

// Stop ends the network (idempotent).
func (n *Network) Stop() {
	if n.cmd.Process == nil {
		return
	}
	n.Kill()
}

// Kill ends the node process at once (kill -9).
func (n *Network) Kill() {
	_ = n.cmd.Process.Kill()
	<-n.done
	_ = n.cmd.Wait()
}

// Join makes both nodes join more stream partitions.
func (n *Network) Join(streamParts ...string) {
	n.t.Helper()
	n.Send(map[string]any{"cmd": "join", "streamParts": streamParts})
	n.Wait(30*time.Second, func(e Event) bool { return e.Event == "joined" })
}
