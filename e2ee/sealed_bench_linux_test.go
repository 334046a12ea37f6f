//go:build linux

package e2ee

import (
	"context"
	"testing"

	"github.com/tributary-iot/tributary/storage"
)

// BenchmarkSealedSecretWriteVsPlain: storing a 32-byte group key through
// the sealing layer against storing it as it is (synced Badger
// transactions), same run; each side has its own store and writes the
// same names.
func BenchmarkSealedSecretWriteVsPlain(b *testing.B) {
	ctx := context.Background()
	plain, s, v := benchSecrets(b)
	put := func(sec Secrets) func(int) {
		return func(i int) {
			if err := sec.PutSecret(ctx, "gk/"+string(rune('a'+i%26)), v); err != nil {
				b.Fatal(err)
			}
		}
	}
	ratioBench(b, put(plain), put(s))
}

// BenchmarkSealedSecretReadVsPlain: reading a group key through the
// sealing layer (Badger read + AES-256-GCM open) against reading it as
// stored, same run; each side has its own store holding the same name, so
// the lookups are alike.
func BenchmarkSealedSecretReadVsPlain(b *testing.B) {
	ctx := context.Background()
	plain, s, v := benchSecrets(b)
	if err := plain.PutSecret(ctx, "gk/k", v); err != nil {
		b.Fatal(err)
	}
	if err := s.PutSecret(ctx, "gk/k", v); err != nil {
		b.Fatal(err)
	}
	get := func(sec Secrets) func(int) {
		return func(int) {
			if got, ok, err := sec.Secret("gk/k"); err != nil || !ok || len(got) != 32 {
				b.Fatal(ok, err)
			}
		}
	}
	ratioBench(b, get(plain), get(s))
}

// benchSecrets opens two stores, one behind the sealing layer, and
// returns them with a 32-byte value to store.
func benchSecrets(b *testing.B) (plain *storage.Store, sealed *SealedSecrets, value []byte) {
	plain = openStore(b)
	sealed, err := NewSealedSecrets(openStore(b), dataKey(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	return plain, sealed, dataKey(b)
}
