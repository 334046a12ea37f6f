package hw

import (
	"context"
	"testing"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// BenchmarkSign measures one signature per op through the URI API: the
// file key (in-process secp256k1) and both TPM key types on swtpm.
func BenchmarkSign(b *testing.B) {
	sim := simtest.StartSWTPM(b)
	dir := b.TempDir()
	payload := make([]byte, 200) // a typical reading's signature payload
	for _, bc := range []struct{ name, uri string }{
		{"file", "file:key"},
		{"tpm-sealed-secp256k1", "tpm://" + sim.Socket + "?blob=k1.tpm"},
		{"tpm-p256", "tpm://" + sim.Socket + "?type=p256&blob=p256.tpm"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			k, err := Create(context.Background(), bc.uri, Options{StateDir: dir})
			if err != nil {
				b.Fatal(err)
			}
			defer k.Close()
			ctx := context.Background()
			for b.Loop() {
				if _, err := k.Sign(ctx, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
