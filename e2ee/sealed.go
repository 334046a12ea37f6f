package e2ee

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// sealedMagic starts every sealed secret. Secrets stored before sealing
// (group keys, key IDs, DER and ML-KEM seeds) do not start with it: a
// random one would with probability 2⁻⁶⁴.
const sealedMagic = "\xfftsec1\x00"

// secretPrefixes are the names of the secrets the exchange stores: group
// keys, our key exchange keys, each stream's current key.
var secretPrefixes = []string{"gk/", "kx/", "latest/"}

// ErrUnseal reports a sealed secret the data key does not open: another
// data key, or a changed store.
var ErrUnseal = errors.New("sealed secret does not open with the data key")

// SealedSecrets seals every secret with AES-256-GCM under the gateway's
// data key before the store below sees it, with the secret's name as
// associated data (a sealed value moved to another name does not open).
// Secrets stored before sealing are read as they are and sealed in place.
// Only the data key is kept in memory; secrets are opened at each read.
type SealedSecrets struct {
	next Secrets
	aead cipher.AEAD
	log  *slog.Logger
	mu   sync.Mutex // orders writes, so a reseal never overwrites a newer value
}

// NewSealedSecrets seals the secrets of next with the 32-byte dataKey.
func NewSealedSecrets(next Secrets, dataKey []byte, log *slog.Logger) (*SealedSecrets, error) {
	if len(dataKey) != 32 {
		return nil, fmt.Errorf("e2ee: data key of %d bytes, want 32 (AES-256)", len(dataKey))
	}
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return nil, fmt.Errorf("e2ee: data key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("e2ee: data key: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SealedSecrets{next: next, aead: aead, log: log.With("component", "e2ee")}, nil
}

// PutSecret implements Secrets: value is sealed before it is stored.
func (s *SealedSecrets) PutSecret(ctx context.Context, name string, value []byte) error {
	sealed, err := s.seal(name, value)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next.PutSecret(ctx, name, sealed)
}

// Secret implements Secrets. A secret stored before sealing is returned
// and sealed in place.
func (s *SealedSecrets) Secret(name string) ([]byte, bool, error) {
	stored, ok, err := s.next.Secret(name)
	if err != nil || !ok {
		return nil, ok, err
	}
	if isSealed(stored) {
		return s.open(name, stored)
	}
	if err := s.reseal(context.Background(), name, stored); err != nil {
		return nil, false, err
	}
	return stored, true, nil
}

func isSealed(v []byte) bool { return bytes.HasPrefix(v, []byte(sealedMagic)) }

func (s *SealedSecrets) seal(name string, value []byte) ([]byte, error) {
	n := len(sealedMagic)
	out := make([]byte, n+s.aead.NonceSize(), n+s.aead.NonceSize()+len(value)+s.aead.Overhead())
	copy(out, sealedMagic)
	if _, err := rand.Read(out[n:]); err != nil {
		return nil, fmt.Errorf("seal secret %q: nonce: %w", name, err)
	}
	return s.aead.Seal(out, out[n:], value, []byte(name)), nil
}

func (s *SealedSecrets) open(name string, stored []byte) ([]byte, bool, error) {
	body := stored[len(sealedMagic):]
	if len(body) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, false, fmt.Errorf("secret %q: %w: %d bytes, too short", name, ErrUnseal, len(stored))
	}
	nonce, ct := body[:s.aead.NonceSize()], body[s.aead.NonceSize():]
	plain, err := s.aead.Open(ct[:0], nonce, ct, []byte(name)) // in place: stored is the store's copy
	if err != nil {
		return nil, false, fmt.Errorf("secret %q: %w (was the data key file replaced?)", name, ErrUnseal)
	}
	return plain, true, nil
}

// reseal seals a secret stored before sealing, unless it changed since
// it was read.
func (s *SealedSecrets) reseal(ctx context.Context, name string, plain []byte) error {
	sealed, err := s.seal(name, plain)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now, ok, err := s.next.Secret(name)
	if err != nil || !ok || !bytes.Equal(now, plain) {
		return err
	}
	if err := s.next.PutSecret(ctx, name, sealed); err != nil {
		return fmt.Errorf("seal secret %q stored before sealing: %w", name, err)
	}
	return nil
}

// Migrate seals in place every secret stored before sealing whose name
// starts with one of secretPrefixes; scan lists the stored secrets under a
// prefix (storage.Store.ScanSecrets). It returns how many it sealed.
func (s *SealedSecrets) Migrate(ctx context.Context, scan func(prefix string, fn func(name string, value []byte) error) error) (int, error) {
	type secret struct {
		name  string
		value []byte
	}
	var plain []secret
	for _, p := range secretPrefixes {
		err := scan(p, func(name string, value []byte) error {
			if !isSealed(value) && strings.HasPrefix(name, p) {
				plain = append(plain, secret{name, value})
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("list secrets to seal: %w", err)
		}
	}
	for i, p := range plain {
		if err := s.reseal(ctx, p.name, p.value); err != nil {
			return i, err
		}
		clear(p.value)
	}
	if len(plain) > 0 {
		s.log.Info("sealed secrets stored before sealing", "count", len(plain))
	}
	return len(plain), nil
}
