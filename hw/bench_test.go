package hw

import (
	"context"
	"os"
	"path/filepath"
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

// BenchmarkOpenDataKey measures what sealing costs at each start: reading
// and unsealing the data key (the secrets are then opened in process).
func BenchmarkOpenDataKey(b *testing.B) {
	sim := simtest.StartSWTPM(b)
	dir := b.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, uri string
		opts      Options
	}{
		{"file-plain", "file:plain.key", Options{}},
		{"file-passphrase", "file:enc.key", Options{Passphrase: PassphraseSource{File: pass}}},
		{"tpm-sealed-secp256k1", "tpm://" + sim.Socket + "?blob=k1.tpm", Options{}},
		{"tpm-p256", "tpm://" + sim.Socket + "?type=p256&blob=p256.tpm", Options{}},
	} {
		b.Run(bc.name, func(b *testing.B) { benchOpenDataKey(b, bc.uri, bc.opts) })
	}
}

func benchOpenDataKey(b *testing.B, uri string, opts Options) {
	ctx := context.Background()
	opts.StateDir = b.TempDir() // a benchmark function runs more than once
	k, err := Create(ctx, uri, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	path := filepath.Join(b.TempDir(), DataKeyFile)
	if _, err := OpenDataKey(ctx, k, path, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := OpenDataKey(ctx, k, path, nil); err != nil {
			b.Fatal(err)
		}
	}
}
