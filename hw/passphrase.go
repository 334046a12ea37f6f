package hw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/keystore"
)

// PassphraseSource says where a passphrase (or PIN) comes from. At most one
// field may be set; the zero value means no passphrase.
type PassphraseSource struct {
	File       string // path of a file holding the passphrase
	Env        string // name of an environment variable holding it
	Credential string // name of a systemd credential (LoadCredential=) under $CREDENTIALS_DIRECTORY
}

// IsZero reports whether no source is configured.
func (p PassphraseSource) IsZero() bool { return p == PassphraseSource{} }

// Validate checks that at most one source is set.
func (p PassphraseSource) Validate() error {
	n := 0
	for _, v := range []string{p.File, p.Env, p.Credential} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w: set only one of file, env and credential", ErrPassphrase)
	}
	return nil
}

// read returns the passphrase without its trailing line break. An empty
// passphrase is an error: it would encrypt with no secret.
func (p PassphraseSource) read(getenv func(string) string) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	var (
		secret string
		where  string
	)
	switch {
	case p.File != "":
		where = "passphrase file " + p.File
		b, err := os.ReadFile(p.File)
		if err != nil {
			return "", fmt.Errorf("%w: read %s: %w", ErrPassphrase, where, err)
		}
		secret = string(b)
	case p.Env != "":
		where = "environment variable " + p.Env
		secret = getenv(p.Env)
	case p.Credential != "":
		where = "systemd credential " + p.Credential
		dir := getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("%w: %s: $CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the unit)", ErrPassphrase, where)
		}
		if strings.ContainsAny(p.Credential, `/\`) {
			return "", fmt.Errorf("%w: %s: a credential name has no path separators", ErrPassphrase, where)
		}
		b, err := os.ReadFile(filepath.Join(dir, p.Credential))
		if err != nil {
			return "", fmt.Errorf("%w: read %s: %w", ErrPassphrase, where, err)
		}
		secret = string(b)
	default:
		return "", errors.New("no passphrase source configured")
	}
	secret = strings.TrimRight(secret, "\r\n")
	if secret == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrPassphrase, where)
	}
	return secret, nil
}

// passphraseKey is a key from an encrypted key file. It seals secrets the
// way the key file itself is encrypted (scrypt from the passphrase, then
// AES-128-CTR with a Keccak MAC, keystore v3's "crypto" object), reading
// the passphrase again at each call rather than keeping it in memory.
type passphraseKey struct {
	softKey
	opts Options
}

func (k passphraseKey) Seal(_ context.Context, secret []byte) ([]byte, error) {
	pass, err := k.opts.Passphrase.read(k.opts.getenv)
	if err != nil {
		return nil, err
	}
	c, err := keystore.EncryptDataV3(secret, []byte(pass), scryptN, scryptP)
	if err != nil {
		return nil, fmt.Errorf("seal with passphrase: %w", err)
	}
	return json.Marshal(c)
}

func (k passphraseKey) Unseal(_ context.Context, sealed []byte) ([]byte, error) {
	pass, err := k.opts.Passphrase.read(k.opts.getenv)
	if err != nil {
		return nil, err
	}
	var c keystore.CryptoJSON
	if err := json.Unmarshal(sealed, &c); err != nil {
		return nil, fmt.Errorf("sealed data: %w", err)
	}
	out, err := keystore.DecryptDataV3(c, pass)
	if errors.Is(err, keystore.ErrDecrypt) {
		return nil, fmt.Errorf("%w: wrong passphrase", ErrPassphrase)
	}
	return out, err
}

func (k passphraseKey) SealedBy() (backend, where string) {
	return "passphrase", k.opts.Passphrase.String()
}

// String says where the passphrase comes from, never what it is.
func (p PassphraseSource) String() string {
	switch {
	case p.File != "":
		return "file " + p.File
	case p.Env != "":
		return "environment variable " + p.Env
	case p.Credential != "":
		return "systemd credential " + p.Credential
	}
	return "none"
}
