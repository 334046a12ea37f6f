package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/streamr"
)

// KeyOptions are the key backend options of the config's [key] table.
func (c *Config) KeyOptions(log *slog.Logger) hw.Options {
	return hw.Options{
		StateDir: c.StateDir,
		Passphrase: hw.PassphraseSource{
			File:       c.Key.PassphraseFile,
			Env:        c.Key.PassphraseEnv,
			Credential: c.Key.PassphraseCredential,
		},
		Logger: log,
	}
}

// KeyURI is key.uri, or the software key in the state directory.
func (c *Config) KeyURI() string {
	if c.Key.URI != "" {
		return c.Key.URI
	}
	return hw.DefaultURI(c.StateDir)
}

// loadOrCreateKey opens the gateway key, generating a software key on
// first start when the config names no hardware key.
func loadOrCreateKey(ctx context.Context, cfg *Config, log *slog.Logger) (hw.Key, error) {
	key, err := openKey(ctx, cfg, log)
	if !errors.Is(err, hw.ErrNoKey) || cfg.Key.URI != "" {
		return key, err
	}
	uri := cfg.KeyURI()
	if key, err = hw.Create(ctx, uri, cfg.KeyOptions(log)); err != nil {
		return nil, fmt.Errorf("gateway key %s: %w", uri, err)
	}
	log.Info("generated gateway key", "uri", uri, "publisher", streamr.UserID(key.PublisherID()))
	return testKey(key), nil
}

// openKey opens the gateway key without creating one. In a build with
// the bridgetest tag, testKey may wrap it (see testkey.go).
func openKey(ctx context.Context, cfg *Config, log *slog.Logger) (hw.Key, error) {
	uri := cfg.KeyURI()
	key, err := hw.Open(ctx, uri, cfg.KeyOptions(log))
	if err != nil {
		return nil, fmt.Errorf("gateway key %s: %w", uri, err)
	}
	return testKey(key), nil
}
