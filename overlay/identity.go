package overlay

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// loadIdentity reads the node key from path, creating an Ed25519 key there
// (mode 0600, written atomically) if the file does not exist. An empty path
// gives an ephemeral key.
func loadIdentity(path string, log *slog.Logger) (crypto.PrivKey, error) {
	if path == "" {
		return generateKey()
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createIdentity(path, log)
	case err != nil:
		return nil, fmt.Errorf("read identity file %s: %w", path, err)
	}
	key, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("identity file is readable by others", "file", path, "mode", fi.Mode().Perm().String())
	}
	return key, nil
}

func generateKey() (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate Ed25519 identity: %w", err)
	}
	return key, nil
}

func createIdentity(path string, log *slog.Logger) (crypto.PrivKey, error) {
	key, err := generateKey()
	if err != nil {
		return nil, err
	}
	b, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode identity for %s: %w", path, err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return nil, err
	}
	log.Info("created overlay identity", "file", path)
	return key, nil
}

// writeFileAtomic writes b to path via a synced temporary file and a
// rename, so a crash never leaves a truncated key behind.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for identity file %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return fmt.Errorf("create identity file %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("chmod identity file %s: %w", tmp, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write identity file %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync identity file %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close identity file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install identity file %s: %w", path, err)
	}
	return nil
}
