package hw

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
