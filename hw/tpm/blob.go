package tpm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/google/go-tpm/tpm2"

	"github.com/tributary-iot/tributary/hw/internal/keyfile"
)

// blobFormat identifies version 1 of the blob file.
const blobFormat = "tributary-tpm-key/1"

// blob is a TPM-wrapped key as stored on disk: the object's public area and
// its private area encrypted by the storage root key. Only the TPM that
// created it can load it.
type blob struct {
	Format  string  `json:"format"`
	Type    KeyType `json:"type"`
	PCRs    []int   `json:"pcrs,omitempty"` // SHA-256 PCRs of the unseal policy
	Public  []byte  `json:"public"`         // marshalled TPM2B_PUBLIC
	Private []byte  `json:"private"`        // marshalled TPM2B_PRIVATE
}

func newBlob(typ KeyType, pcrs []int, pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) *blob {
	return &blob{Format: blobFormat, Type: typ, PCRs: pcrs, Public: tpm2.Marshal(pub), Private: tpm2.Marshal(priv)}
}

// parseBlob decodes and checks a blob file's content.
func parseBlob(raw []byte) (*blob, tpm2.TPM2BPublic, tpm2.TPM2BPrivate, error) {
	var (
		b    blob
		pub  tpm2.TPM2BPublic
		priv tpm2.TPM2BPrivate
	)
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, pub, priv, fmt.Errorf("decode TPM key blob: %w", err)
	}
	if b.Format != blobFormat {
		return nil, pub, priv, fmt.Errorf("TPM key blob format %q, want %q", b.Format, blobFormat)
	}
	typ := b.Type
	if typ == sealedData { // sealed like a secp256k1 key
		typ = Secp256k1
	}
	if err := (Config{Type: typ, PCRs: b.PCRs, Blob: "-"}).validate(); err != nil {
		return nil, pub, priv, err
	}
	p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b.Public)
	if err != nil {
		return nil, pub, priv, fmt.Errorf("TPM key blob public area: %w", err)
	}
	if _, err := p.Contents(); err != nil {
		return nil, pub, priv, fmt.Errorf("TPM key blob public area: %w", err)
	}
	s, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](b.Private)
	if err != nil {
		return nil, pub, priv, fmt.Errorf("TPM key blob private area: %w", err)
	}
	return &b, *p, *s, nil
}

func readBlob(path string) (*blob, tpm2.TPM2BPublic, tpm2.TPM2BPrivate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, tpm2.TPM2BPublic{}, tpm2.TPM2BPrivate{}, fmt.Errorf("read TPM key blob: %w", err)
	}
	b, pub, priv, err := parseBlob(raw)
	if err != nil {
		return nil, pub, priv, fmt.Errorf("%s: %w", path, err)
	}
	return b, pub, priv, nil
}

func (b *blob) write(path string) error {
	raw, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return fmt.Errorf("encode TPM key blob: %w", err)
	}
	return keyfile.WriteNew(path, append(raw, '\n'))
}

// checkAbsent fails early, before the TPM does any work, when a blob exists.
func checkAbsent(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("TPM key blob %s: %w", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("TPM key blob: %w", err)
	}
	return nil
}
