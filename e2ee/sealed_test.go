package e2ee

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/tributary-iot/tributary/storage"
)

func dataKey(t testing.TB) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func openStore(t testing.TB) *storage.Store {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSealedSecretsRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	dk := dataKey(t)
	s, err := NewSealedSecrets(db, dk, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := dataKey(t) // a group key's worth of random bytes
	if err := s.PutSecret(ctx, "gk/aa/k1", secret); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Secret("gk/aa/k1")
	if err != nil || !ok || !bytes.Equal(got, secret) {
		t.Fatalf("Secret: %x %v %v, want %x", got, ok, err, secret)
	}
	raw, _, _ := db.Secret("gk/aa/k1")
	if bytes.Contains(raw, secret) || !isSealed(raw) || len(raw) != len(sealedMagic)+12+32+16 {
		t.Fatalf("stored value %x is not the sealed secret", raw)
	}
	if _, ok, err := s.Secret("gk/aa/none"); ok || err != nil {
		t.Fatalf("missing secret: %v %v", ok, err)
	}

	// The name is associated data: a sealed value moved to another name
	// does not open; nor does any value under another data key.
	if err := db.PutSecret(ctx, "gk/aa/k2", raw); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Secret("gk/aa/k2"); !errors.Is(err, ErrUnseal) {
		t.Fatalf("moved sealed value: %v, want ErrUnseal", err)
	}
	other, err := NewSealedSecrets(db, dataKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Secret("gk/aa/k1"); !errors.Is(err, ErrUnseal) {
		t.Fatalf("other data key: %v, want ErrUnseal", err)
	}
	if _, err := NewSealedSecrets(db, dk[:16], nil); err == nil {
		t.Fatal("a 16-byte data key was accepted")
	}
}

// TestSealedSecretsMigration: secrets stored before sealing are read as
// they are and sealed in place, on read and by Migrate; other entries
// (the partitions list) are left alone.
func TestSealedSecretsMigration(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	old := map[string][]byte{
		"gk/aa/k1":    dataKey(t),
		"gk/bb/k2":    dataKey(t),
		"kx/RSA":      []byte("\x30\x82\x04\xa4 a DER private key"),
		"latest/s/x":  []byte("k2 1700000000000"),
		"parts/s/x#0": nil,
	}
	for name, v := range old {
		if err := db.PutSecret(ctx, name, v); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewSealedSecrets(db, dataKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Secret("gk/aa/k1") // read before migration
	if err != nil || !ok || !bytes.Equal(got, old["gk/aa/k1"]) {
		t.Fatalf("old secret: %x %v %v", got, ok, err)
	}
	if raw, _, _ := db.Secret("gk/aa/k1"); !isSealed(raw) {
		t.Fatal("old secret read but not sealed in place")
	}
	n, err := s.Migrate(ctx, db.ScanSecrets)
	if err != nil || n != 3 {
		t.Fatalf("Migrate: %d, %v; want the 3 not yet sealed", n, err)
	}
	if n, err := s.Migrate(ctx, db.ScanSecrets); err != nil || n != 0 {
		t.Fatalf("second Migrate: %d, %v; want 0", n, err)
	}
	for name, v := range old {
		raw, _, _ := db.Secret(name)
		if name == "parts/s/x#0" {
			if len(raw) != 0 {
				t.Fatalf("%s changed to %x", name, raw)
			}
			continue
		}
		if !isSealed(raw) || bytes.Contains(raw, v) {
			t.Fatalf("%s after migration: %x, want sealed", name, raw)
		}
		if got, ok, err := s.Secret(name); err != nil || !ok || !bytes.Equal(got, v) {
			t.Fatalf("%s after migration: %x %v %v, want %x", name, got, ok, err, v)
		}
	}
}
