package hw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/tributary-iot/tributary/hw/internal/keyfile"
)

// Sealer is implemented by keys whose backend can protect other secrets at
// rest: what Seal returns, only this backend (this TPM, this token, this
// passphrase) can Unseal. Keys of backends without such protection (plain
// key files, ATECC608) do not implement it.
type Sealer interface {
	Seal(ctx context.Context, secret []byte) ([]byte, error)
	Unseal(ctx context.Context, sealed []byte) ([]byte, error)
	// SealedBy names the backend ("tpm", "pkcs11", "passphrase") and
	// where it is (a TPM device, a token label, a passphrase source),
	// for the data key file, logs and errors.
	SealedBy() (backend, where string)
}

// Unwrapper is implemented by keys that wrap another key (test hooks);
// OpenDataKey looks through them for a Sealer.
type Unwrapper interface{ Unwrap() Key }

// DataKeyFile is the default data key file name in the state directory.
const DataKeyFile = "data.key"

// DataKeyLen is the size of the data key: an AES-256 key.
const DataKeyLen = 32

// BackendNone is DataKey.Backend when no backend seals the data key: the
// file alone (mode 0600 in the 0700 state directory) protects it.
const BackendNone = "none"

// dataKeyFormat identifies version 1 of the data key file.
const dataKeyFormat = "tributary-data-key/1"

// DataKey is the gateway's data-encryption key, which seals the secrets it
// stores (group keys, key exchange keys). On disk it is wrapped by the key
// backend where the backend can seal; otherwise it is stored as it is.
type DataKey struct {
	Key     []byte // DataKeyLen bytes; clear it when done
	Path    string // the data key file
	Backend string // "tpm", "pkcs11", "passphrase", or BackendNone
	Where   string // the backend's device, token or passphrase source
}

// dataKeyFile is the JSON content of the data key file: Sealed when a
// backend wrapped the key, Key (hex) when none did.
type dataKeyFile struct {
	Format  string `json:"format"`
	Backend string `json:"backend"`
	Where   string `json:"where,omitempty"`
	Sealed  []byte `json:"sealed,omitempty"`
	Key     string `json:"key,omitempty"`
}

// OpenDataKey reads the data key at path, unsealing it with k, or creates
// one on first use: sealed by k's backend if k is a Sealer, else stored
// plainly (logged as a warning, so the user knows). A file stored plainly
// is sealed in place once k can seal. A data key that k cannot unseal —
// another backend, a replaced TPM or token, another passphrase — is an
// error naming the backend and the file; nothing is overwritten then.
func OpenDataKey(ctx context.Context, k Key, path string, log *slog.Logger) (*DataKey, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "key", "data_key", path)
	s := sealerOf(k)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createDataKey(ctx, s, path, log)
	}
	if err != nil {
		return nil, fmt.Errorf("read data key file: %w", err)
	}
	var f dataKeyFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("data key file %s: %w", path, err)
	}
	if f.Format != dataKeyFormat {
		return nil, fmt.Errorf("data key file %s: format %q, want %q", path, f.Format, dataKeyFormat)
	}
	if f.Backend == BackendNone {
		return openPlainDataKey(ctx, s, path, f, log)
	}
	return unsealDataKey(ctx, s, path, f)
}

func sealerOf(k Key) Sealer {
	for k != nil {
		if s, ok := k.(Sealer); ok {
			return s
		}
		u, ok := k.(Unwrapper)
		if !ok {
			return nil
		}
		k = u.Unwrap()
	}
	return nil
}

func createDataKey(ctx context.Context, s Sealer, path string, log *slog.Logger) (*DataKey, error) {
	key := make([]byte, DataKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	dk, content, err := encodeDataKey(ctx, s, path, key)
	if err != nil {
		return nil, err
	}
	if err := keyfile.WriteNew(path, content); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	logProtection(log, "created data key", dk)
	return dk, nil
}

// encodeDataKey seals key with s (if not nil) and returns the file content.
func encodeDataKey(ctx context.Context, s Sealer, path string, key []byte) (*DataKey, []byte, error) {
	dk := &DataKey{Key: key, Path: path, Backend: BackendNone}
	f := dataKeyFile{Format: dataKeyFormat, Backend: BackendNone}
	if s != nil {
		sealed, err := s.Seal(ctx, key)
		if err != nil {
			backend, where := s.SealedBy()
			return nil, nil, fmt.Errorf("seal data key %s with %s %s: %w", path, backend, where, err)
		}
		dk.Backend, dk.Where = s.SealedBy()
		f.Backend, f.Where, f.Sealed = dk.Backend, dk.Where, sealed
	} else {
		f.Key = hex.EncodeToString(key)
	}
	content, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("encode data key file: %w", err)
	}
	return dk, append(content, '\n'), nil
}

func logProtection(log *slog.Logger, msg string, dk *DataKey) {
	if dk.Backend == BackendNone {
		log.Warn(msg + ": not sealed, the key backend cannot seal (plain key file or ATECC608); " +
			"stored secrets are protected only by the state directory's permissions (file mode 0600)")
		return
	}
	log.Info(msg+": sealed", "backend", dk.Backend, "where", dk.Where)
}

func openPlainDataKey(ctx context.Context, s Sealer, path string, f dataKeyFile, log *slog.Logger) (*DataKey, error) {
	if err := checkPrivate(path); err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(f.Key)
	if err != nil || len(key) != DataKeyLen {
		return nil, fmt.Errorf("data key file %s: key is not %d hex-encoded bytes", path, DataKeyLen)
	}
	if s == nil {
		dk := &DataKey{Key: key, Path: path, Backend: BackendNone}
		logProtection(log, "opened data key", dk)
		return dk, nil
	}
	// The backend can seal now (a key moved into hardware, a passphrase
	// added): seal the file in place.
	dk, content, err := encodeDataKey(ctx, s, path, key)
	if err != nil {
		return nil, err
	}
	if err := keyfile.Replace(path, content); err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	logProtection(log, "sealed the plainly stored data key", dk)
	return dk, nil
}

// checkPrivate refuses a plainly stored data key that group or others
// can read.
func checkPrivate(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat data key file: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("data key file %s has mode %04o: it must not be accessible to group or others (chmod 600)", path, perm)
	}
	return nil
}

func unsealDataKey(ctx context.Context, s Sealer, path string, f dataKeyFile) (*DataKey, error) {
	if s == nil {
		return nil, fmt.Errorf("data key file %s is sealed by %s %s, but the configured gateway key cannot unseal: "+
			"configure the key it was made with (key.uri, key.passphrase_*)", path, f.Backend, f.Where)
	}
	backend, where := s.SealedBy()
	if backend != f.Backend {
		return nil, fmt.Errorf("data key file %s is sealed by %s %s, but the gateway key's backend is %s %s: "+
			"configure the key it was made with (key.uri, key.passphrase_*)", path, f.Backend, f.Where, backend, where)
	}
	key, err := s.Unseal(ctx, f.Sealed)
	if err != nil {
		return nil, fmt.Errorf("data key file %s (it seals the stored group keys): %s %s cannot unseal it (%s): %w",
			path, backend, where, unsealHint[backend], err)
	}
	if len(key) != DataKeyLen {
		clear(key)
		return nil, fmt.Errorf("data key file %s: unsealed %d bytes, want %d", path, len(key), DataKeyLen)
	}
	return &DataKey{Key: key, Path: path, Backend: backend, Where: where}, nil
}

// unsealHint says what usually makes a backend refuse to unseal.
var unsealHint = map[string]string{
	"tpm":        "was the TPM replaced or cleared, or the PCRs changed?",
	"pkcs11":     "was the token replaced or re-initialised?",
	"passphrase": "is the passphrase the one it was sealed with?",
}

// DefaultDataKeyPath is the data key file in the state directory.
func DefaultDataKeyPath(stateDir string) string { return filepath.Join(stateDir, DataKeyFile) }
