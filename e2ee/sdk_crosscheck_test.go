package e2ee

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// sdkcheckDir holds the npm packages of the SDK cross-checks (scripts/test.sh
// installs them).
const sdkcheckDir = "../streamr/testdata/sdkcheck"

// TestSDKKeyExchangeCrossCheck runs the SDK subscriber's side of the key
// exchange in Node.js (keyexchange.mjs: node:crypto and @streamr/utils):
// its signed GroupKeyRequest, with a 4096-bit RSA key of its own, is
// answered by Tributary's publisher, and it decrypts the group key and
// Tributary's AES content, following an in-band rotation.
func TestSDKKeyExchangeCrossCheck(t *testing.T) {
	requireNode(t)
	ka := genKey(t)
	subscriberKey := make([]byte, 32) // the SDK side signs with it
	_, _ = rand.Read(subscriberKey)
	ks, err := streamr.ParseEVMKey(subscriberKey)
	if err != nil {
		t.Fatal(err)
	}
	aAddr := ka.Address()
	sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(aAddr[:])+"/secret"), 3)
	sent := &captureTopic{}
	a, err := New(Config{Signer: ka, Secrets: &memSecrets{m: map[string][]byte{}}, RotateEvery: time.Hour,
		Subscribers: Subscribers{string(sp.Stream): {ks.PublisherID()}}})
	if err != nil {
		t.Fatal(err)
	}
	a.Attach(sp, sent)
	now := time.Now()
	am := &member{x: a, key: ka}
	texts := []string{`{"n":1,"t":"température ✓"}`, `{"n":2}`, `{"n":3}`}
	msgs := []*streamr.StreamMessage{
		content(t, am, sp, 1, texts[0], now),
		content(t, am, sp, 2, texts[1], now.Add(2*time.Hour)), // announces the next key
		content(t, am, sp, 3, texts[2], now.Add(2*time.Hour)),
	}

	dir := t.TempDir()
	in := map[string]any{
		"streamId": string(sp.Stream), "partition": sp.Partition, "publisher": streamr.UserID(aAddr[:]),
		"groupKeyId": *msgs[0].Content().GroupKeyID, "subscriber": streamr.UserID(ks.PublisherID()),
		"privateKey": hex.EncodeToString(subscriberKey),
	}
	inFile, stateFile := filepath.Join(dir, "in.json"), filepath.Join(dir, "state.json")
	writeJSONFile(t, inFile, in)
	runNode(t, "request", inFile, stateFile)

	var state struct{ Request string }
	readJSONFile(t, stateFile, &state)
	encoded, err := hex.DecodeString(state.Request)
	if err != nil {
		t.Fatal(err)
	}
	req, err := streamr.Unmarshal(encoded)
	if err != nil {
		t.Fatal(err)
	}
	if err := streamr.Validate(req, len(encoded), streamr.Limits{}); err != nil {
		t.Fatalf("the SDK-side request does not validate: %v", err)
	}
	if !a.HandleMessage(context.Background(), req) || len(sent.msgs) != 1 {
		t.Fatalf("the publisher sent %d responses to the SDK-side request, want 1", len(sent.msgs))
	}

	raw := filepath.Join(dir, "messages.raw")
	var buf bytes.Buffer
	w := streamr.NewRawWriter(&buf)
	if err := w.WriteFrame(sent.msgs[0]); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(raw, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Verified   int
		Keys       map[string]string
		Plaintexts []string
	}
	if err := json.Unmarshal(runNode(t, "open", stateFile, raw), &got); err != nil {
		t.Fatal(err)
	}
	if got.Verified != 4 || len(got.Keys) != 2 {
		t.Errorf("node verified %d messages (want 4) and holds %d keys (want 2)", got.Verified, len(got.Keys))
	}
	for i, want := range texts {
		if i >= len(got.Plaintexts) || got.Plaintexts[i] != want {
			t.Fatalf("node decrypted %q, want %q", got.Plaintexts, texts)
		}
	}
}

type captureTopic struct{ msgs [][]byte }

func (c *captureTopic) Publish(_ context.Context, e [][]byte) (int, error) {
	c.msgs = append(c.msgs, e...)
	return len(e), nil
}

func runNode(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(sdkcheckDir, "keyexchange.mjs")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("keyexchange.mjs %s: %v\n%s", args[0], err, stderr.String())
	}
	return out
}

func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err == nil {
		err = os.WriteFile(path, b, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// requireNode skips without node and the installed npm packages, unless
// CI or TRIBUTARY_REQUIRE_NODE asks for them (scripts/test.sh installs
// both).
func requireNode(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(sdkcheckDir, "node_modules", "@streamr", "utils"))
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" || os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" || os.Getenv("TRIBUTARY_REQUIRE_NODE") != "" {
		t.Fatalf("node and the npm packages of %s are required: %v", sdkcheckDir, err)
	}
	t.Skipf("node or the npm packages of %s missing (%v)", sdkcheckDir, errors.Unwrap(err))
}
