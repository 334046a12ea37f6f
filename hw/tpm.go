package hw

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/tributary-iot/tributary/hw/tpm"
)

// tpmBackend keeps the key with a TPM 2.0 (see package hw/tpm); a relative
// blob path resolves against the state directory.
type tpmBackend struct{}

func tpmConfig(uri string, opts Options) (tpm.Config, error) {
	cfg, err := tpm.ParseURI(uri)
	if err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrBadURI, err)
	}
	cfg.Blob = opts.resolve(cfg.Blob)
	cfg.Logger = opts.logger()
	return cfg, nil
}

func (tpmBackend) open(ctx context.Context, uri string, opts Options) (Key, error) {
	cfg, err := tpmConfig(uri, opts)
	if err != nil {
		return nil, err
	}
	k, err := tpm.Open(ctx, cfg)
	return k, fileErrors(err)
}

func (tpmBackend) create(ctx context.Context, uri string, opts Options) (Key, error) {
	cfg, err := tpmConfig(uri, opts)
	if err != nil {
		return nil, err
	}
	k, err := tpm.Create(ctx, cfg)
	return k, fileErrors(err)
}

func (tpmBackend) importKey(ctx context.Context, uri string, priv []byte, opts Options) (Key, error) {
	cfg, err := tpmConfig(uri, opts)
	if err != nil {
		return nil, err
	}
	if cfg.Type == tpm.P256 {
		return nil, fmt.Errorf("%w: TPM P-256 keys are generated inside the TPM", ErrImportUnsupported)
	}
	k, err := tpm.Import(ctx, cfg, priv)
	return k, fileErrors(err)
}

// fileErrors maps a backend's missing or existing key file to ErrNoKey and
// ErrKeyExists.
func fileErrors(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", ErrNoKey, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", ErrKeyExists, err)
	}
	return err
}
