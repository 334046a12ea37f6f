//go:build linux

package e2ee

import (
	"context"
	"testing"
)

// BenchmarkSealedSecretWriteVsPlain: storing a 32-byte group key through
// the sealing layer against storing it as it is, on the same Badger store
// (synced transactions), same run.
func BenchmarkSealedSecretWriteVsPlain(b *testing.B) {
	ctx := context.Background()
	db := openStore(b)
	s, err := NewSealedSecrets(db, dataKey(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	v := dataKey(b)
	put := func(sec Secrets, prefix string) func(int) {
		return func(i int) {
			if err := sec.PutSecret(ctx, prefix+string(rune('a'+i%26)), v); err != nil {
				b.Fatal(err)
			}
		}
	}
	ratioBench(b, put(db, "gk/plain/"), put(s, "gk/sealed/"))
}

// BenchmarkSealedSecretReadVsPlain: reading a group key through the
// sealing layer (Badger read + AES-256-GCM open) against reading it as
// stored, same run.
func BenchmarkSealedSecretReadVsPlain(b *testing.B) {
	ctx := context.Background()
	db := openStore(b)
	s, err := NewSealedSecrets(db, dataKey(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	v := dataKey(b)
	if err := db.PutSecret(ctx, "gk/plain", v); err != nil {
		b.Fatal(err)
	}
	if err := s.PutSecret(ctx, "gk/sealed", v); err != nil {
		b.Fatal(err)
	}
	get := func(sec Secrets, name string) func(int) {
		return func(int) {
			if got, ok, err := sec.Secret(name); err != nil || !ok || len(got) != 32 {
				b.Fatal(ok, err)
			}
		}
	}
	ratioBench(b, get(db, "gk/plain"), get(s, "gk/sealed"))
}
