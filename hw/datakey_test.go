package hw

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// openDataKeyTwice creates the data key with k, checks how it is stored and
// that a second open returns the same key.
func openDataKeyTwice(t *testing.T, k Key, path, wantBackend string) *DataKey {
	t.Helper()
	ctx := context.Background()
	dk, err := OpenDataKey(ctx, k, path, nil)
	if err != nil {
		t.Fatalf("create data key: %v", err)
	}
	if dk.Backend != wantBackend || len(dk.Key) != DataKeyLen {
		t.Fatalf("data key backend %q, %d bytes; want %q, %d", dk.Backend, len(dk.Key), wantBackend, DataKeyLen)
	}
	again, err := OpenDataKey(ctx, k, path, nil)
	if err != nil {
		t.Fatalf("reopen data key: %v", err)
	}
	if !bytes.Equal(again.Key, dk.Key) {
		t.Fatal("reopened data key differs")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sealed := wantBackend != BackendNone
	if inFile := bytes.Contains(raw, dk.Key) || bytes.Contains(raw, []byte(hex.EncodeToString(dk.Key))); inFile == sealed {
		t.Fatalf("data key in its file: %v, want %v (backend %s)", inFile, !sealed, wantBackend)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("data key file mode %v (%v), want 0600", info.Mode(), err)
	}
	return dk
}

func TestDataKeyFileBackends(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withPass := Options{StateDir: dir, Passphrase: PassphraseSource{File: pass}}

	plain, err := Create(ctx, "plain.key", Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	plainDK := openDataKeyTwice(t, plain, filepath.Join(dir, "plain.data"), BackendNone)

	enc, err := Create(ctx, "enc.key", withPass)
	if err != nil {
		t.Fatal(err)
	}
	encPath := filepath.Join(dir, "enc.data")
	openDataKeyTwice(t, enc, encPath, "passphrase")

	// Another passphrase cannot unseal it, and says which file and why.
	if err := os.WriteFile(pass, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenDataKey(ctx, enc, encPath, nil)
	if !errors.Is(err, ErrPassphrase) || !strings.Contains(err.Error(), encPath) || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("wrong passphrase: %v, want ErrPassphrase naming %s", err, encPath)
	}
	// A plain key cannot open a sealed data key.
	if _, err := OpenDataKey(ctx, plain, encPath, nil); err == nil || !strings.Contains(err.Error(), "sealed by passphrase") {
		t.Fatalf("plain key on a sealed data key: %v", err)
	}

	// A plainly stored data key is sealed in place once the key can seal.
	if err := os.WriteFile(pass, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	upgraded, err := OpenDataKey(ctx, enc, plainDK.Path, nil)
	if err != nil || upgraded.Backend != "passphrase" || !bytes.Equal(upgraded.Key, plainDK.Key) {
		t.Fatalf("upgrade: %+v, %v; want the same key sealed by passphrase", upgraded, err)
	}
	if raw, _ := os.ReadFile(plainDK.Path); bytes.Contains(raw, []byte(hex.EncodeToString(plainDK.Key))) {
		t.Fatal("upgraded data key file still holds the key in hex")
	}

	// A plainly stored data key readable by others is refused.
	loose := filepath.Join(dir, "loose.data")
	openDataKeyTwice(t, plain, loose, BackendNone)
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDataKey(ctx, plain, loose, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("data key file mode 0644: %v", err)
	}
}

// TestDataKeyTPM seals the data key to swtpm with both TPM key types,
// reopens it after a TPM restart, and checks that a replaced TPM gives an
// error naming the TPM and the files.
func TestDataKeyTPM(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{StateDir: dir}
	uris := map[string]string{
		"sealed": "tpm://" + sim.Socket + "?blob=sealed.tpm&pcrs=7",
		"p256":   "tpm://" + sim.Socket + "?type=p256&blob=p256.tpm",
	}
	keys := map[string][]byte{}
	for name, uri := range uris {
		k, err := Create(ctx, uri, opts)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = openDataKeyTwice(t, k, filepath.Join(dir, name+".data"), "tpm").Key
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
	}

	sim.Restart()
	for name, uri := range uris {
		k, err := Open(ctx, uri, opts)
		if err != nil {
			t.Fatal(err)
		}
		dk, err := OpenDataKey(ctx, k, filepath.Join(dir, name+".data"), nil)
		if err != nil || !bytes.Equal(dk.Key, keys[name]) {
			t.Fatalf("%s after TPM restart: %v (same key: %v)", name, err, err == nil && bytes.Equal(dk.Key, keys[name]))
		}
		k.Close()
	}

	sim.Replace()
	_, err := Open(ctx, uris["sealed"], opts)
	if err == nil || !strings.Contains(err.Error(), sim.Socket) || !strings.Contains(err.Error(), filepath.Join(dir, "sealed.tpm")) {
		t.Fatalf("gateway key on a replaced TPM: %v, want an error naming the TPM and the blob", err)
	}
	// A new key on the new TPM cannot unseal the old data key.
	k, err := Create(ctx, "tpm://"+sim.Socket+"?blob=new.tpm", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	path := filepath.Join(dir, "sealed.data")
	before, _ := os.ReadFile(path)
	_, err = OpenDataKey(ctx, k, path, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "tpm "+sim.Socket) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("data key on a replaced TPM: %v, want an error naming the TPM and %s", err, path)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a failed unseal changed the data key file")
	}
}
