package storage

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// kindKey prefixes end-to-end encryption secrets: group keys and the key
// exchange key pair (issue 18). They live in the same database as the
// messages they encrypt, so a backlog signed before a reboot is still
// decryptable after it, and they are protected at rest as the state
// directory is (0700, the database files 0600).
const kindKey = 'k'

func secretKey(name string) []byte { return append([]byte{kindKey}, name...) }

// PutSecret stores value under name in a synced transaction: once it
// returns, the secret survives a crash.
func (s *Store) PutSecret(ctx context.Context, name string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store secret %q: %w", name, err)
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(secretKey(name), value) }); err != nil {
		return fmt.Errorf("store secret %q: %w", name, err)
	}
	return nil
}

// Secret returns the value stored under name.
func (s *Store) Secret(name string) ([]byte, bool, error) {
	if s.closed.Load() {
		return nil, false, ErrClosed
	}
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(secretKey(name))
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read secret %q: %w", name, err)
	}
	return out, true, nil
}

// ScanSecrets calls fn with every secret whose name starts with prefix,
// in name order.
func (s *Store) ScanSecrets(prefix string, fn func(name string, value []byte) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.View(func(txn *badger.Txn) error {
		p := secretKey(prefix)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read secret: %w", err)
			}
			if err := fn(string(it.Item().Key()[1:]), v); err != nil {
				return err
			}
		}
		return nil
	})
}
