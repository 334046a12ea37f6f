package gateway

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tributary-iot/tributary/e2ee"
	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/storage"
)

// sealedSecrets opens the data key (state_dir/data.key) with the gateway
// key — sealed by its backend where the backend can seal, see
// hw.OpenDataKey — and returns the store's secrets sealed under it, after
// sealing in place those an earlier version stored as they were.
func sealedSecrets(ctx context.Context, cfg *Config, key hw.Key, store *storage.Store, log *slog.Logger) (*e2ee.SealedSecrets, error) {
	dk, err := hw.OpenDataKey(ctx, key, hw.DefaultDataKeyPath(cfg.StateDir), log)
	if err != nil {
		return nil, fmt.Errorf("end-to-end encryption secrets: %w", err)
	}
	defer clear(dk.Key) // the cipher keeps its own expanded key
	secrets, err := e2ee.NewSealedSecrets(store, dk.Key, log)
	if err != nil {
		return nil, err
	}
	if _, err := secrets.Migrate(ctx, store.ScanSecrets); err != nil {
		return nil, fmt.Errorf("seal stored secrets: %w", err)
	}
	return secrets, nil
}
