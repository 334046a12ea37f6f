package tpm

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"

	"github.com/google/go-tpm/tpm2"
)

// sealedData is the blob type of a secret sealed for another part of the
// gateway (its data key), not a signing key.
const sealedData KeyType = "data"

// Backend is the SealedBy backend name of TPM keys.
const Backend = "tpm"

// Seal seals secret to the TPM under the storage root key, bound to the
// same PCRs as the key, and returns the blob (JSON, like the key blob).
// Only this TPM can unseal it.
func (k sealedKey) Seal(ctx context.Context, secret []byte) ([]byte, error) {
	c, err := connect(ctx, k.cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.sealData(secret, k.cfg.PCRs)
}

// Unseal returns the secret of a blob made by Seal.
func (k sealedKey) Unseal(ctx context.Context, sealed []byte) ([]byte, error) {
	c, err := connect(ctx, k.cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.unsealData(sealed)
}

// SealedBy names the TPM.
func (k sealedKey) SealedBy() (backend, where string) { return Backend, k.cfg.where() }

// Seal seals secret to the TPM that holds the key, on the key's
// connection (a raw socket serves one client at a time).
func (k *P256Key) Seal(ctx context.Context, secret []byte) ([]byte, error) {
	var out []byte
	err := k.withSRK(ctx, func() (err error) {
		out, err = k.conn.sealData(secret, nil)
		return err
	})
	return out, err
}

// Unseal returns the secret of a blob made by Seal.
func (k *P256Key) Unseal(ctx context.Context, sealed []byte) ([]byte, error) {
	var out []byte
	err := k.withSRK(ctx, func() (err error) {
		out, err = k.conn.unsealData(sealed)
		return err
	})
	return out, err
}

// SealedBy names the TPM.
func (k *P256Key) SealedBy() (backend, where string) { return Backend, k.conn.where }

// withSRK runs fn with the storage root key loaded on the key's
// connection (the loaded P-256 key does not need it, so it is flushed
// between uses).
func (k *P256Key) withSRK(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("TPM seal: %w", fs.ErrClosed)
	}
	if err := k.conn.createSRK(); err != nil {
		return err
	}
	defer func() {
		k.conn.flush(k.conn.srk.Handle)
		k.conn.srk = tpm2.NamedHandle{}
	}()
	return fn()
}

func (c *conn) sealData(secret []byte, pcrs []int) ([]byte, error) {
	pub, priv, err := c.seal(secret, pcrs)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(newBlob(sealedData, pcrs, pub, priv))
	if err != nil {
		return nil, fmt.Errorf("encode sealed blob: %w", err)
	}
	return raw, nil
}

func (c *conn) unsealData(raw []byte) ([]byte, error) {
	b, pub, priv, err := parseBlob(raw)
	if err != nil {
		return nil, err
	}
	if b.Type != sealedData {
		return nil, fmt.Errorf("TPM blob holds a %s key, not sealed data", b.Type)
	}
	return c.unseal(pub, priv, b.PCRs)
}
