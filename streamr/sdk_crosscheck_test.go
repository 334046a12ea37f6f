package streamr

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The SDK cross-check signs a few hundred messages in Go, writes them in the
// raw format, and has streamr/testdata/sdkcheck/verify.mjs decode them with
// protobufjs, rebuild every signature payload in JavaScript and verify it
// with the official @streamr/utils. It needs node and npm; without them it
// skips, unless CI, TRIBUTARY_REQUIRE_TOOLS or TRIBUTARY_REQUIRE_NODE is set.

const sdkcheckDir = "testdata/sdkcheck"

// crossManifest is what verify.mjs compares besides the messages.
type crossManifest struct {
	PartitionKeys []partitionCase `json:"partitionKeys"`
	NumberKeys    []numberCase    `json:"numberKeys"`
	StreamIDs     []streamIDCase  `json:"streamIds"`
	AES           []aesCase       `json:"aes"`
}

type partitionCase struct {
	Count int    `json:"count"`
	Key   string `json:"key"`
	Want  int    `json:"want"`
}

type numberCase struct {
	Count int   `json:"count"`
	Key   int64 `json:"key"`
	Want  int   `json:"want"`
}

type streamIDCase struct {
	Input string `json:"input"`
	Want  string `json:"want"`
}

type aesCase struct {
	Index     int    `json:"index"`
	Key       string `json:"key"`
	Plaintext string `json:"plaintext"`
}

// crossSummary is verify.mjs's output.
type crossSummary struct {
	Total   int            `json:"total"`
	Valid   int            `json:"valid"`
	ByType  map[string]int `json:"byType"`
	Invalid []struct {
		Index  int    `json:"index"`
		Reason string `json:"reason"`
	} `json:"invalid"`
	Manifest struct {
		Checked    int               `json:"checked"`
		Mismatches []json.RawMessage `json:"mismatches"`
	} `json:"manifest"`
}

// uncompressedP256 publishes under the 65-byte uncompressed P-256 key, the
// SDK's other accepted ECDSA_SECP256R1 publisher ID form.
type uncompressedP256 struct{ *P256Key }

func (k uncompressedP256) PublisherID() []byte {
	b, err := k.PrivateKey().PublicKey.Bytes()
	if err != nil {
		panic(err) // a P256Key always holds a valid public key
	}
	return b
}

func TestSDKCrossCheck(t *testing.T) {
	requireNode(t)
	corpus := buildCrossCorpus(t)
	dir := t.TempDir()
	rawPath := filepath.Join(dir, "messages.raw")
	manifestPath := filepath.Join(dir, "manifest.json")
	writeRawFile(t, rawPath, corpus.messages)
	writeJSON(t, manifestPath, corpus.manifest)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(sdkcheckDir, "verify.mjs"), rawPath, manifestPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("verify.mjs: %v\n%s", err, stderr.String())
	}
	var sum crossSummary
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("verify.mjs output %q: %v", out, err)
	}
	t.Logf("SDK cross-check: %d messages, %d valid, %d invalid (expected %d), %d manifest cases; by type %v",
		sum.Total, sum.Valid, len(sum.Invalid), len(corpus.corrupted), sum.Manifest.Checked, sum.ByType)

	if sum.Total != len(corpus.messages) {
		t.Fatalf("verify.mjs read %d messages, Go wrote %d", sum.Total, len(corpus.messages))
	}
	var rejected []int
	for _, inv := range sum.Invalid {
		rejected = append(rejected, inv.Index)
		if !slices.Contains(corpus.corrupted, inv.Index) {
			t.Errorf("message %d rejected by @streamr/utils: %s", inv.Index, inv.Reason)
		}
	}
	for _, i := range corpus.corrupted {
		if !slices.Contains(rejected, i) {
			t.Errorf("corrupted message %d (%s) accepted by @streamr/utils", i, corpus.corruption[i])
		}
	}
	if want := len(corpus.messages) - len(corpus.corrupted); sum.Valid != want {
		t.Errorf("valid = %d, want %d", sum.Valid, want)
	}
	wantChecked := len(corpus.manifest.PartitionKeys) + len(corpus.manifest.NumberKeys) +
		len(corpus.manifest.StreamIDs) + len(corpus.manifest.AES)
	if sum.Manifest.Checked != wantChecked {
		t.Errorf("verify.mjs checked %d manifest cases, want %d", sum.Manifest.Checked, wantChecked)
	}
	for _, m := range sum.Manifest.Mismatches {
		t.Errorf("mismatch with @streamr/utils: %s", m)
	}
}

// requireNode makes sure node and the pinned npm packages are available.
func requireNode(t *testing.T) {
	t.Helper()
	_, nodeErr := exec.LookPath("node")
	_, npmErr := exec.LookPath("npm")
	if err := errors.Join(nodeErr, npmErr); err != nil {
		if os.Getenv("CI") != "" || os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" || os.Getenv("TRIBUTARY_REQUIRE_NODE") != "" {
			t.Fatalf("node and npm are required for the SDK cross-check: %v", err)
		}
		t.Skipf("node or npm not installed (%v); set TRIBUTARY_REQUIRE_NODE to make this a failure", err)
	}
	if _, err := os.Stat(filepath.Join(sdkcheckDir, "node_modules", "@streamr", "utils")); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// --ignore-scripts: @streamr/utils falls back to pure-JS secp256k1 when
	// the optional native addon is not built (spec §9).
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = sdkcheckDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", sdkcheckDir, err, out)
	}
}

// crossCorpus is the Go side of the cross-check.
type crossCorpus struct {
	messages   []*StreamMessage
	corrupted  []int          // indexes that must fail verification
	corruption map[int]string // what was done to each
	manifest   crossManifest
}

var crossStreamIDs = []string{
	"streamr.eth/foo/bar",
	"Tributary.ETH/Sensors/Temperature_1",
	"sub.domain.eth/a-b.c/d_e/0123456789",
	"0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf/Greenhouse/Humidity",
	"0xabcdefabcdefabcdefabcdefabcdefabcdefabcd/x",
	"ünïcödé.eth/path",
	"streamr.eth/",
}

var crossContents = []struct {
	typ     ContentType
	content []byte
}{
	{ContentJSON, []byte(`{"temperature":21.5,"unit":"°C","note":"température élevée ✓ 日本語 🌡"}`)},
	{ContentJSON, []byte(`{"a":[1,2,3],"b":{"c":null,"d":true},"esc":"quote \" backslash \\ \u0000 tab\t"}`)},
	{ContentJSON, []byte(`{}`)},
	{ContentJSON, []byte(`"just a string"`)},
	{ContentJSON, []byte(`[{"ключ":"значение"},{"키":"값"}]`)},
	{ContentBinary, nil}, // filled with random bytes per message
	{ContentBinary, []byte{}},
}

func buildCrossCorpus(t *testing.T) *crossCorpus {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	signers := crossSigners(t)
	c := &crossCorpus{corruption: map[int]string{}}

	for _, in := range crossStreamIDs {
		id, err := ParseStreamID(in)
		if err != nil {
			t.Fatalf("corpus stream ID %q: %v", in, err)
		}
		c.manifest.StreamIDs = append(c.manifest.StreamIDs, streamIDCase{Input: in, Want: string(id)})
	}
	for si, s := range signers {
		chains := map[StreamPartID]*Chain{}
		for i := range 60 {
			id := mustStreamID(t, crossStreamIDs[rng.IntN(len(crossStreamIDs))])
			part := StreamPartID{Stream: id, Partition: rng.IntN(MaxPartitions)}
			ch := chains[part]
			if ch == nil {
				ch = NewChain(NewChainID())
				chains[part] = ch
			}
			// Some timestamps repeat, so sequence numbers above 0 appear.
			ts := int64(1_700_000_000_000 + i*1000)
			if rng.IntN(3) == 0 && ch.Last() != nil {
				ts = ch.Last().Timestamp
			}
			ref, prev := ch.Next(ts)
			if si%2 == 1 && i%4 == 0 {
				prev = nil // chains without previous references, like native-sdk
			}
			m := &StreamMessage{
				ID: MessageID{
					StreamID: id, StreamPartition: int32(part.Partition), Timestamp: ref.Timestamp,
					SequenceNumber: ref.SequenceNumber, MsgChainID: ch.ID(),
				},
				PrevMsgRef: prev,
			}
			c.addBody(t, rng, m, i)
			if err := SignMessage(ctx, s, m); err != nil {
				t.Fatal(err)
			}
			if err := VerifySignature(m); err != nil {
				t.Fatalf("Go rejects its own message %d: %v", len(c.messages), err)
			}
			c.messages = append(c.messages, m)
		}
	}
	c.addCorrupted(t, signers)
	c.addPartitionCases(rng)
	return c
}

func crossSigners(t *testing.T) []Signer {
	t.Helper()
	var out []Signer
	out = append(out, keyOne(t))
	for range 2 {
		k, err := GenerateEVMKey()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	for range 2 {
		k, err := GenerateP256Key()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	k, err := GenerateP256Key()
	if err != nil {
		t.Fatal(err)
	}
	return append(out, uncompressedP256{k})
}

// addBody gives m a content, AES content, rotation, or group key body.
func (c *crossCorpus) addBody(t *testing.T, rng *rand.Rand, m *StreamMessage, i int) {
	t.Helper()
	switch i % 10 {
	case 7: // AES-encrypted JSON, sometimes announcing the next key
		key := randomBytes(rng, GroupKeyLen)
		plain := crossContents[i%5].content
		ct, err := EncryptAES(key, plain)
		if err != nil {
			t.Fatal(err)
		}
		gk := "4717fdf7-3cb7-4819-95fc-21122409e630-GroupKey" + strconv.Itoa(i)
		cm := &ContentMessage{Content: ct, ContentType: ContentJSON, EncryptionType: EncryptionAES, GroupKeyID: &gk}
		if i%20 == 7 {
			cm.NewGroupKey = &EncryptedGroupKey{ID: gk + "-next", Data: randomBytes(rng, 48)}
		}
		m.Body = cm
		c.manifest.AES = append(c.manifest.AES, aesCase{
			Index: len(c.messages), Key: hex.EncodeToString(key), Plaintext: hex.EncodeToString(plain),
		})
	case 8:
		m.Body = &GroupKeyRequest{
			RequestID:      fmt.Sprintf("c0ffee%02d-0000-4000-8000-%012d", i, i),
			RecipientID:    randomBytes(rng, 20),
			PublicKey:      []byte("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + strconv.Itoa(i) + "\n-----END PUBLIC KEY-----\n"),
			GroupKeyIDs:    []string{"gk-" + strconv.Itoa(i) + "-a", "gk-b", "ключ"},
			EncryptionType: AsymmetricEncryptionType(i % 2),
		}
		m.PrevMsgRef = nil
	case 9:
		m.Body = &GroupKeyResponse{
			RequestID:   "req-" + strconv.Itoa(i),
			RecipientID: randomBytes(rng, 33),
			GroupKeys: []EncryptedGroupKey{
				{ID: "gk-1", Data: randomBytes(rng, 512)},
				{ID: "gk-2-ü", Data: randomBytes(rng, 1568+64+32)},
			},
			EncryptionType: AsymmetricEncryptionType(i % 2),
		}
		m.PrevMsgRef = nil
	default:
		cc := crossContents[rng.IntN(len(crossContents))]
		content := cc.content
		if cc.typ == ContentBinary && content == nil {
			content = randomBytes(rng, 1+rng.IntN(300))
		}
		m.Body = &ContentMessage{Content: content, ContentType: cc.typ}
	}
}

// addCorrupted appends copies of good messages damaged after signing.
func (c *crossCorpus) addCorrupted(t *testing.T, signers []Signer) {
	t.Helper()
	other, err := GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	damage := []struct {
		name  string
		pick  func(*StreamMessage) bool
		apply func(*StreamMessage)
	}{
		{"content byte flipped (EVM)", isType(SignatureEVM), func(m *StreamMessage) { flipContent(m) }},
		{"content byte flipped (P-256)", isType(SignatureSecp256r1), func(m *StreamMessage) { flipContent(m) }},
		{"signature byte flipped (P-256)", isType(SignatureSecp256r1), func(m *StreamMessage) { m.Signature[10] ^= 1 }},
		{"other publisher (EVM)", isType(SignatureEVM), func(m *StreamMessage) { m.ID.PublisherID = other.PublisherID() }},
		{"v = 0/1 (EVM)", isType(SignatureEVM), func(m *StreamMessage) { m.Signature[64] -= 27 }},
		{"timestamp changed", isType(SignatureEVM), func(m *StreamMessage) { m.ID.Timestamp++ }},
		{"partition changed (P-256)", isType(SignatureSecp256r1), func(m *StreamMessage) {
			m.ID.StreamPartition = (m.ID.StreamPartition + 1) % MaxPartitions
		}},
		{"previous ref dropped", func(m *StreamMessage) bool { return m.PrevMsgRef != nil }, func(m *StreamMessage) { m.PrevMsgRef = nil }},
		{"chain ID changed", isType(SignatureEVM), func(m *StreamMessage) { m.ID.MsgChainID += "x" }},
	}
	for _, d := range damage {
		i := slices.IndexFunc(c.messages, func(m *StreamMessage) bool {
			_, isContent := m.Body.(*ContentMessage)
			return isContent && len(m.Content().Content) > 0 && d.pick(m)
		})
		if i < 0 {
			t.Fatalf("no message to corrupt with %q", d.name)
		}
		m := cloneMessage(t, c.messages[i])
		d.apply(m)
		if err := VerifySignature(m); err == nil {
			t.Fatalf("Go accepts a message with %s", d.name)
		}
		c.corrupted = append(c.corrupted, len(c.messages))
		c.corruption[len(c.messages)] = d.name
		c.messages = append(c.messages, m)
	}
}

func (c *crossCorpus) addPartitionCases(rng *rand.Rand) {
	keys := []string{"foo", "bar", "sensor-1", "äö", "", "🌡️ greenhouse/3", "a/b#c?d"}
	for i := range 40 {
		keys = append(keys, "device-"+strconv.Itoa(i)+"-"+hex.EncodeToString(randomBytes(rng, 4)))
	}
	for _, key := range keys {
		for _, n := range []int{1, 2, 7, 100} {
			c.manifest.PartitionKeys = append(c.manifest.PartitionKeys, partitionCase{Count: n, Key: key, Want: PartitionForKey(n, key)})
		}
	}
	// JavaScript numbers are exact up to 2^53-1.
	for _, key := range []int64{0, 1, -1, 12345, -12345, 1<<53 - 1, -(1<<53 - 1), 99, 100, -100} {
		for _, n := range []int{1, 3, 7, 100} {
			c.manifest.NumberKeys = append(c.manifest.NumberKeys, numberCase{Count: n, Key: key, Want: PartitionForNumber(n, key)})
		}
	}
}

func isType(st SignatureType) func(*StreamMessage) bool {
	return func(m *StreamMessage) bool { return m.SignatureType == st }
}

func flipContent(m *StreamMessage) {
	c := m.Content()
	c.Content = bytes.Clone(c.Content)
	c.Content[0] ^= 0x20
}

// cloneMessage deep-copies m through its wire form.
func cloneMessage(t *testing.T, m *StreamMessage) *StreamMessage {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustStreamID(t testing.TB, s string) StreamID {
	t.Helper()
	id, err := ParseStreamID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func writeRawFile(t *testing.T, path string, msgs []*StreamMessage) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	w := NewRawWriter(bw)
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(bw.Flush(), f.Close()); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
