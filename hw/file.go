package hw

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/tributary-iot/tributary/hw/internal/keyfile"
	"github.com/tributary-iot/tributary/streamr"
)

// Light scrypt parameters: 4 MB and ~16 ms per derivation. The standard
// ones need 256 MB and peak at 540 MB RSS, more than a 512 MB Pi has.
const (
	scryptN = keystore.LightScryptN
	scryptP = keystore.LightScryptP
)

// fileBackend stores a secp256k1 key in a file: plain hex (mode 0600) without
// a passphrase, a go-ethereum keystore v3 JSON file with one.
type fileBackend struct{}

// softKey is a key held in process memory; Close has nothing to release.
type softKey struct{ *streamr.EVMKey }

func (softKey) Close() error { return nil }

func (fileBackend) open(_ context.Context, uri string, opts Options) (Key, error) {
	path, err := filePath(uri, opts)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: key file %s does not exist", ErrNoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if isKeystore(raw) {
		return openKeystore(path, raw, opts)
	}
	return openPlain(path, raw, opts)
}

func isKeystore(raw []byte) bool { return bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) }

func openKeystore(path string, raw []byte, opts Options) (Key, error) {
	if opts.Passphrase.IsZero() {
		return nil, fmt.Errorf("%w: key file %s is an encrypted keystore but no passphrase is configured", ErrPassphrase, path)
	}
	pass, err := opts.Passphrase.read(opts.getenv)
	if err != nil {
		return nil, err
	}
	k, err := keystore.DecryptKey(raw, pass)
	if errors.Is(err, keystore.ErrDecrypt) {
		return nil, fmt.Errorf("%w: wrong passphrase for key file %s", ErrPassphrase, path)
	}
	if err != nil {
		return nil, fmt.Errorf("decrypt key file %s: %w", path, err)
	}
	return passphraseKey{softKey{streamr.NewEVMKey(k.PrivateKey)}, opts}, nil
}

func openPlain(path string, raw []byte, opts Options) (Key, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat key file: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: it must not be accessible to group or others (chmod 600)", path, perm)
	}
	text := bytes.TrimPrefix(bytes.TrimSpace(raw), []byte("0x"))
	priv := make([]byte, hex.DecodedLen(len(text)))
	defer clear(priv)
	if _, err := hex.Decode(priv, text); err != nil {
		return nil, fmt.Errorf("key file %s is neither hex nor a keystore: %w", path, err)
	}
	k, err := streamr.ParseEVMKey(priv)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if !opts.Passphrase.IsZero() {
		opts.logger().Warn("key file is not encrypted although a passphrase is configured; re-import it to encrypt",
			"path", path)
	}
	return softKey{k}, nil
}

func (b fileBackend) create(ctx context.Context, uri string, opts Options) (Key, error) {
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		return nil, err
	}
	return b.store(uri, k, opts)
}

func (b fileBackend) importKey(_ context.Context, uri string, priv []byte, opts Options) (Key, error) {
	k, err := streamr.ParseEVMKey(priv)
	if err != nil {
		return nil, err
	}
	return b.store(uri, k, opts)
}

// store writes k to the URI's file, encrypted if a passphrase is configured.
func (fileBackend) store(uri string, k *streamr.EVMKey, opts Options) (Key, error) {
	path, err := filePath(uri, opts)
	if err != nil {
		return nil, err
	}
	content, err := encodeKeyFile(k, opts)
	if err != nil {
		return nil, err
	}
	defer clear(content)
	if err := keyfile.WriteNew(path, content); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: %w", ErrKeyExists, err)
		}
		return nil, err
	}
	opts.logger().Info("created key file", "path", path, "publisher", Describe(k), "encrypted", !opts.Passphrase.IsZero())
	if !opts.Passphrase.IsZero() {
		return passphraseKey{softKey{k}, opts}, nil
	}
	return softKey{k}, nil
}

func encodeKeyFile(k *streamr.EVMKey, opts Options) ([]byte, error) {
	if opts.Passphrase.IsZero() {
		return []byte(hex.EncodeToString(crypto.FromECDSA(k.PrivateKey())) + "\n"), nil
	}
	pass, err := opts.Passphrase.read(opts.getenv)
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return nil, fmt.Errorf("keystore id: %w", err)
	}
	ks := &keystore.Key{Id: id, Address: k.Address(), PrivateKey: k.PrivateKey()}
	out, err := keystore.EncryptKey(ks, pass, scryptN, scryptP)
	if err != nil {
		return nil, fmt.Errorf("encrypt key: %w", err)
	}
	return out, nil
}

// filePath extracts the key file path from file:///abs, file:rel or a
// plain path; relative paths resolve against the state directory.
func filePath(uri string, opts Options) (string, error) {
	if scheme(uri) == "" {
		return opts.resolve(uri), nil
	}
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadURI, err)
	}
	if u.Host != "" && u.Host != "localhost" {
		return "", fmt.Errorf("%w %q: a file URI has no host (use file:///absolute/path or file:relative/path)", ErrBadURI, uri)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w %q: a file URI takes no query or fragment", ErrBadURI, uri)
	}
	path := u.Path
	if u.Opaque != "" {
		path = u.Opaque
	}
	if path == "" {
		return "", fmt.Errorf("%w %q: no file path", ErrBadURI, uri)
	}
	return opts.resolve(filepath.FromSlash(path)), nil
}
