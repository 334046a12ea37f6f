//go:build pkcs11 && cgo

package hw

import (
	"context"
	"fmt"

	"github.com/tributary-iot/tributary/hw/pkcs11"
)

// pkcs11Backend keeps the key on a PKCS#11 token (package hw/pkcs11). The
// PIN comes from the URI (pin-value, pin-source) or else the passphrase
// source.
type pkcs11Backend struct{}

func pkcs11Config(uri string, opts Options) (pkcs11.Config, error) {
	u, err := pkcs11.ParseURI(uri)
	if err != nil {
		return pkcs11.Config{}, fmt.Errorf("%w: %w", ErrBadURI, err)
	}
	cfg := pkcs11.Config{URI: u, Logger: opts.logger()}
	if u.PINValue == "" && u.PINSource == "" && !opts.Passphrase.IsZero() {
		if cfg.PIN, err = opts.Passphrase.read(opts.getenv); err != nil {
			return pkcs11.Config{}, fmt.Errorf("PKCS#11 PIN: %w", err)
		}
	}
	return cfg, nil
}

func (pkcs11Backend) open(ctx context.Context, uri string, opts Options) (Key, error) {
	cfg, err := pkcs11Config(uri, opts)
	if err != nil {
		return nil, err
	}
	k, err := pkcs11.Open(ctx, cfg)
	if err != nil {
		return nil, fileErrors(err)
	}
	return k, nil
}

func (pkcs11Backend) create(ctx context.Context, uri string, opts Options) (Key, error) {
	cfg, err := pkcs11Config(uri, opts)
	if err != nil {
		return nil, err
	}
	k, err := pkcs11.Create(ctx, cfg)
	if err != nil {
		return nil, fileErrors(err)
	}
	return k, nil
}

func (pkcs11Backend) importKey(ctx context.Context, uri string, priv []byte, opts Options) (Key, error) {
	cfg, err := pkcs11Config(uri, opts)
	if err != nil {
		return nil, err
	}
	if cfg.URI.KeyType != pkcs11.Secp256k1 {
		return nil, fmt.Errorf("%w: import takes secp256k1 keys, the URI asks for %s", ErrImportUnsupported, cfg.URI.KeyType)
	}
	k, err := pkcs11.Import(ctx, cfg, priv)
	if err != nil {
		return nil, fileErrors(err)
	}
	return k, nil
}
