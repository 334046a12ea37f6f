package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/e2ee"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/hw/simtest"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// sealedPublisher is A's config: a rule that always encrypts for sub.
func sealedPublisher(keyTable, sub string) string {
	return keyTable + overlayTable("tcp", "") + fmt.Sprintf(`
[[rule]]
topic = "secret/#"
stream = "{address}/secret"
encryption = "always"
subscribers = [%q]
`, sub)
}

// encryptedPair starts a, then b subscribed to a's stream, publishes n
// readings on a and waits until b's MQTT consumer has them in plaintext.
func encryptedPair(t *testing.T, a, b *instance, stream string, n int) {
	t.Helper()
	a.start()
	t.Cleanup(a.stop)
	b.joinOverlay(a.bootstrapAddr("tcp"))
	b.appendConfig(fmt.Sprintf(`[encryption]
key_exchange = "rsa"
rsa_key_bits = 2048
key_request_timeout = "3s"
[[subscribe]]
stream = %q
topic = "got"
`, stream))
	b.start()
	t.Cleanup(b.stop)
	got := subscribeAll(t, b, "got")
	publishN(t, a, "secret/x", n)
	waitDeliveries(t, got, n, b)
	if g := got.topic("got"); fmt.Sprint(g) != fmt.Sprint(seq(0, n)) {
		t.Fatalf("B got %v, want 0…%d in order", g, n-1)
	}
}

// sealingBackend is a key backend that seals, with its simulator.
type sealingBackend struct {
	uri       string   // key.uri
	where     string   // what the data key file says it is sealed by ("tpm /…", `pkcs11 token "gw"`)
	replace   func()   // puts fresh hardware in the old one's place
	keyFiles  []string // the gateway key's files in the state directory (removed for a new key)
	keyErrHas []string // what the error of the old key on the new hardware names
}

// TestSealedGroupKeysTPM: the key sealed to swtpm seals the data key.
func TestSealedGroupKeysTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real bridges and swtpm")
	}
	sim := simtest.StartSWTPM(t)
	testSealedGroupKeys(t, sealingBackend{
		uri:       "tpm://" + sim.Socket + "?blob=key.tpm",
		where:     "tpm " + sim.Socket,
		replace:   sim.Replace,
		keyFiles:  []string{"key.tpm"},
		keyErrHas: []string{sim.Socket, "key.tpm", "another TPM"},
	})
}

// testSealedGroupKeys: a gateway A whose key backend seals keeps its data
// key sealed by it; the group keys A writes, and those its subscriber B
// receives (and B's key exchange key), are nowhere in either state
// directory in plaintext; both survive a restart (A keeps its group key,
// B still decrypts, A's export --decrypt opens them); fresh hardware in
// the old one's place stops A with errors naming the backend and the file.
func testSealedGroupKeys(t *testing.T, hwb sealingBackend) {
	b := newInstance(t, "")
	addrB := newKey(t, b)
	a := newInstance(t, sealedPublisher(fmt.Sprintf("[key]\nuri = %q\n", hwb.uri), addrB))
	addrA := newKey(t, a)
	stream := addrA + "/secret"
	encryptedPair(t, a, b, stream, 5)

	a.stop()
	b.stop()
	secretsA := storedSecrets(t, a, hwb.uri)
	secretsB := storedSecrets(t, b, "")
	if df := dataKeyFile(t, a); df.Backend+" "+df.Where != hwb.where {
		t.Fatalf("A's data key is sealed by %s %s, want %s", df.Backend, df.Where, hwb.where)
	}
	gk, gkB := groupKeys(secretsA), groupKeys(secretsB)
	if len(gk) != 1 || len(gkB) != 1 || !bytes.Equal(gkB[0], gk[0]) || len(kxKeys(secretsB)) != 1 {
		t.Fatalf("A holds %d group keys, B %d and %d key exchange keys; want 1, the same one, and 1",
			len(gk), len(gkB), len(kxKeys(secretsB)))
	}
	for _, in := range []*instance{a, b} {
		assertNotInFiles(t, in.dir, append(gk, kxKeys(secretsB)...))
	}

	a.start()
	b.start()
	got := subscribeAll(t, b, "got")
	publishN(t, a, "secret/x", 5, 5)
	waitDeliveries(t, got, 5, b)
	if g := got.topic("got"); fmt.Sprint(g) != fmt.Sprint(seq(5, 10)) {
		t.Fatalf("after the restart B got %v, want 5…9 in order", g)
	}
	a.stop()
	b.stop()
	plain, stderr, code := a.exportAll(stream, "--decrypt")
	if code != 0 || len(plain) != 10 {
		t.Fatalf("A's export --decrypt: %d messages, exit %d\n%s", len(plain), code, stderr)
	}
	if gk2 := groupKeys(storedSecrets(t, a, hwb.uri)); len(gk2) != 1 || !bytes.Equal(gk2[0], gk[0]) {
		t.Fatalf("after the restart A holds %d group keys, want the one it had", len(gk2))
	}

	// Fresh hardware: neither the gateway key nor the data key it sealed
	// loads, and the errors say which backend and which file.
	hwb.replace()
	stderr = runFailing(t, a)
	t.Logf("fresh hardware: %s", lastLine(stderr))
	for _, want := range hwb.keyErrHas {
		if !logHas(stderr, want) {
			t.Fatalf("start on fresh hardware: want an error naming %q, got\n%s", want, stderr)
		}
	}
	for _, f := range hwb.keyFiles {
		if err := os.Remove(filepath.Join(a.dir, "state", f)); err != nil {
			t.Fatal(err)
		}
	}
	newKey(t, a) // a new gateway key on the new hardware cannot unseal the old data key either
	dataKey := filepath.Join(a.dir, "state", hw.DataKeyFile)
	stderr = runFailing(t, a)
	t.Logf("data key sealed by the old hardware: %s", lastLine(stderr))
	if !logHas(stderr, dataKey) || !logHas(stderr, hwb.where) || !logHas(stderr, "replaced") {
		t.Fatalf("start with a data key of other hardware: want an error naming %s and %s, got\n%s", hwb.where, dataKey, stderr)
	}
}

// TestSealedSecretsMigration: a file-key gateway whose store holds group
// keys as earlier versions wrote them (not sealed) reads them, seals them
// in place at start and goes on encrypting with the same key; B decrypts.
func TestSealedSecretsMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real bridges")
	}
	b := newInstance(t, "")
	addrB := newKey(t, b)
	a := newInstance(t, sealedPublisher("", addrB))
	addrA := newKey(t, a)
	stream := addrA + "/secret"
	oldID, oldKey := writeUnsealedGroupKey(t, a, stream)
	assertInFiles(t, a.dir, oldKey) // the scan finds a group key stored in plaintext

	encryptedPair(t, a, b, stream, 3)
	for _, line := range []string{`msg="sealed secrets stored before sealing" component=e2ee count=2`, `not sealed, the key backend cannot seal`} {
		if !strings.Contains(a.logs(), line) {
			t.Fatalf("A's log lacks %q:\n%s", line, a.logs())
		}
	}
	a.stop()
	b.stop()
	for _, m := range a.export(stream) {
		if c := m.Content(); c == nil || c.GroupKeyID == nil || *c.GroupKeyID != oldID {
			t.Fatalf("message %s not encrypted with the migrated key %s", m.ID.Ref(), oldID)
		}
	}
	secrets := storedSecrets(t, a, "")
	if gk := groupKeys(secrets); len(gk) != 1 || !bytes.Equal(gk[0], oldKey) {
		t.Fatalf("after migration A holds %d group keys, want the old one", len(gk))
	}
	for name, s := range secrets {
		if bytes.Contains(s.raw, s.plain) {
			t.Fatalf("%s is still stored as it was: %x", name, s.raw)
		}
	}
	if df := dataKeyFile(t, a); df.Backend != hw.BackendNone {
		t.Fatalf("a plain key file's data key is sealed by %s", df.Backend)
	}
}

// writeUnsealedGroupKey stores, in a's stopped state directory, a group
// key for stream as versions before sealing did: the key exchange with
// the store itself as its Secrets. It returns the key's ID and bytes.
func writeUnsealedGroupKey(t *testing.T, a *instance, stream string) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	state := filepath.Join(a.dir, "state")
	key, err := hw.Open(ctx, "key", hw.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	db, err := storage.Open(storage.Options{Dir: filepath.Join(state, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	x, err := e2ee.New(e2ee.Config{Signer: key, Secrets: db})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	part, err := streamr.NewStreamPartID(streamr.StreamID(stream), 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &streamr.ContentMessage{Content: []byte(`{"n":-1}`)}
	if _, err := x.Encrypt(ctx, part, c, time.Now()); err != nil {
		t.Fatal(err)
	}
	var data []byte
	if err := db.ScanSecrets("gk/", func(_ string, v []byte) error { data = v; return nil }); err != nil || len(data) != streamr.GroupKeyLen {
		t.Fatalf("unsealed group key: %x, %v", data, err)
	}
	return *c.GroupKeyID, data
}

type storedSecret struct{ raw, plain []byte }

// storedSecrets opens the stopped instance's store and data key (with the
// key at uri, or its key file) and returns its group keys and key
// exchange keys, as stored and unsealed.
func storedSecrets(t *testing.T, in *instance, uri string) map[string]storedSecret {
	t.Helper()
	ctx := context.Background()
	state := filepath.Join(in.dir, "state")
	if uri == "" {
		uri = "key" // the key file in the state directory
	}
	key, err := hw.Open(ctx, uri, hw.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	dk, err := hw.OpenDataKey(ctx, key, filepath.Join(state, hw.DataKeyFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(storage.Options{Dir: filepath.Join(state, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sealed, err := e2ee.NewSealedSecrets(db, dk.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]storedSecret{}
	for _, prefix := range []string{"gk/", "kx/"} {
		err := db.ScanSecrets(prefix, func(name string, raw []byte) error {
			plain, _, err := sealed.Secret(name)
			out[name] = storedSecret{raw, plain}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func groupKeys(s map[string]storedSecret) [][]byte { return secretsUnder(s, "gk/") }
func kxKeys(s map[string]storedSecret) [][]byte    { return secretsUnder(s, "kx/") }

func secretsUnder(s map[string]storedSecret, prefix string) [][]byte {
	var out [][]byte
	for name, v := range s {
		if strings.HasPrefix(name, prefix) {
			out = append(out, v.plain)
		}
	}
	return out
}

func dataKeyFile(t *testing.T, in *instance) struct{ Backend, Where string } {
	t.Helper()
	var f struct{ Backend, Where string }
	raw, err := os.ReadFile(filepath.Join(in.dir, "state", hw.DataKeyFile))
	if err == nil {
		err = json.Unmarshal(raw, &f)
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// filesContaining lists the files under dir whose bytes contain secret.
func filesContaining(t *testing.T, dir string, secret []byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, secret) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func assertNotInFiles(t *testing.T, dir string, secrets [][]byte) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 16 {
			t.Fatalf("secret of %d bytes: too short to search for", len(s))
		}
		if found := filesContaining(t, dir, s); len(found) > 0 {
			t.Fatalf("a secret is in plaintext in %v", found)
		}
	}
}

func assertInFiles(t *testing.T, dir string, secret []byte) {
	t.Helper()
	if len(filesContaining(t, dir, secret)) == 0 {
		t.Fatalf("the plaintext secret was not found under %s: the scan would miss it", dir)
	}
}

// logHas reports whether a log holds s, as it is or quoted in a value.
func logHas(log, s string) bool {
	return strings.Contains(log, s) || strings.Contains(log, strings.ReplaceAll(s, `"`, `\"`))
}

// runFailing runs `bridge run`, which must fail at start, and returns its
// stderr.
func runFailing(t *testing.T, in *instance) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bridgeBinary, "run", "--config", in.config)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || ctx.Err() != nil {
		t.Fatalf("bridge run: %v (context: %v), want a failure at start\n%s", err, ctx.Err(), stderr.String())
	}
	return stderr.String()
}
