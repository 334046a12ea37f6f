package storage

import (
	"context"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// kindSession prefixes the MQTT broker's persistent session records
// (clients, subscriptions, queued messages, retained messages, delivery
// marks): S<broker key> → broker value. Their layout is the broker's; the
// store only keeps them durably. (Kept here rather than in keys.go so the
// broker's records stay one self-contained feature.)
const kindSession = 'S'

func sessionKey(key string) []byte { return append([]byte{kindSession}, key...) }

// ScanSessions calls fn for every session record whose key starts with
// prefix, in key order. fn must not keep value.
func (s *Store) ScanSessions(prefix string, fn func(key string, value []byte) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = sessionKey(prefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error {
				return fn(string(item.Key()[1:]), v)
			})
			if err != nil {
				return fmt.Errorf("session record %q: %w", item.Key()[1:], err)
			}
		}
		return nil
	})
}

// CommitSessions writes session records, synced and all or nothing: a nil
// value deletes its key. The broker relies on that: one delivery's queued
// copies and its delivery mark must land together, so a batch too big for
// one transaction goes through putAtomic. Session records do not count
// against the quota: the broker bounds them per session.
func (s *Store) CommitSessions(ctx context.Context, writes map[string][]byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit session records: %w", err)
	}
	if s.closed.Load() {
		return ErrClosed
	}
	ws := make([]write, 0, len(writes))
	for k, v := range writes {
		ws = append(ws, write{key: sessionKey(k), value: v, del: v == nil})
	}
	if err := s.putAtomic(ws); err != nil {
		return fmt.Errorf("commit %d session records: %w", len(writes), err)
	}
	return nil
}
