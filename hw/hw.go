package hw

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"periph.io/x/conn/v3/i2c"

	"github.com/tributary-iot/tributary/streamr"
)

// Key is a streamr.Signer that may hold resources (a TPM connection, a
// PKCS#11 session, an I2C bus). Close releases them; a Key must not be used
// after Close. Sign is safe for concurrent use.
type Key interface {
	streamr.Signer
	io.Closer
}

// Options carries what backends need beyond the URI. The zero value works
// for file keys without a passphrase, relative to the working directory.
type Options struct {
	StateDir   string           // relative key paths and default blob files resolve here; if empty, the working directory
	Passphrase PassphraseSource // encrypts file keys, and is the PIN of pkcs11 keys whose URI has none; if zero, file keys are plain hex
	Logger     *slog.Logger     // if nil, logs are discarded

	// Getenv reads environment variables (passphrase Env, $CREDENTIALS_DIRECTORY).
	// If nil, os.Getenv.
	Getenv func(string) string
	// OpenI2C opens the I2C bus named in an ecc:// URI (for example "1" for
	// i2c-1). If nil, periph's host drivers are initialised and i2creg.Open is used.
	OpenI2C func(name string) (i2c.BusCloser, error)
}

// logger is what the backends log to: Logger, or a discarding logger if it
// is nil, as component "key".
func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger.With("component", "key")
}

func (o Options) getenv(name string) string {
	if o.Getenv == nil {
		return os.Getenv(name)
	}
	return o.Getenv(name)
}

// resolve makes a relative path relative to the state directory.
func (o Options) resolve(path string) string {
	if path == "" || filepath.IsAbs(path) || o.StateDir == "" {
		return path
	}
	return filepath.Join(o.StateDir, path)
}

// backend is one key store. Each scheme has one; backendFor picks it.
type backend interface {
	open(ctx context.Context, uri string, opts Options) (Key, error)
	create(ctx context.Context, uri string, opts Options) (Key, error)
	importKey(ctx context.Context, uri string, priv []byte, opts Options) (Key, error)
}

// backendFor dispatches on the URI scheme. A URI without a scheme is a file path.
func backendFor(uri string) (backend, error) {
	switch scheme(uri) {
	case "", "file":
		return fileBackend{}, nil
	case "tpm":
		return tpmBackend{}, nil
	case "pkcs11":
		return pkcs11Backend{}, nil
	case "ecc":
		return eccBackend{}, nil
	}
	return nil, fmt.Errorf("%w %q: unknown scheme %q (want file, tpm, pkcs11 or ecc)", ErrBadURI, uri, scheme(uri))
}

// scheme returns the lowercased URI scheme, or "" for a plain path.
func scheme(uri string) string {
	s, _, ok := strings.Cut(uri, ":")
	if !ok || s == "" || strings.ContainsAny(s, `/\.`) {
		return ""
	}
	return strings.ToLower(s)
}

// Open opens the existing key at uri. It fails with ErrNoKey if there is none.
func Open(ctx context.Context, uri string, opts Options) (Key, error) {
	b, err := backendFor(uri)
	if err != nil {
		return nil, err
	}
	return b.open(ctx, uri, opts)
}

// Create generates a new key at uri (inside the hardware where there is
// hardware). It refuses with ErrKeyExists to replace an existing key.
func Create(ctx context.Context, uri string, opts Options) (Key, error) {
	b, err := backendFor(uri)
	if err != nil {
		return nil, err
	}
	return b.create(ctx, uri, opts)
}

// Import stores the 32-byte secp256k1 private key priv at uri, for
// backends that allow it (file, tpm sealed, pkcs11); others return
// ErrImportUnsupported. It refuses with ErrKeyExists to replace a key.
func Import(ctx context.Context, uri string, priv []byte, opts Options) (Key, error) {
	b, err := backendFor(uri)
	if err != nil {
		return nil, err
	}
	return b.importKey(ctx, uri, priv, opts)
}

// DefaultURI is the key URI used when the configuration names none: a key
// file named "key" in the state directory.
func DefaultURI(stateDir string) string {
	return "file://" + filepath.ToSlash(filepath.Join(stateDir, "key"))
}

// Describe formats a signer's identity for `bridge key show` and logs:
// the publisher ID (an address for secp256k1, the compressed public key
// for P-256) and the signature type its messages carry, for example
// "0x1f…9a (ECDSA_SECP256K1_EVM)".
func Describe(k streamr.Signer) string {
	return fmt.Sprintf("%s (%s)", streamr.UserID(k.PublisherID()), k.SignatureType())
}

// CheckURI reports a key URI whose scheme no backend serves, without
// opening anything.
func CheckURI(uri string) error {
	_, err := backendFor(uri)
	return err
}
