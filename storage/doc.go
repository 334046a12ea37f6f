// Package storage is Tributary's durable store, built on Badger. It is the
// only package that imports Badger.
//
// It holds three kinds of data:
//   - pending readings: MQTT readings accepted before the PUBACK and not yet
//     signed, in ingest order (Append, Pending);
//   - signed messages: encoded Streamr messages in log order for the
//     forwarder (After) and in (timestamp, sequence number, publisher, chain)
//     order per stream part for resends (Messages);
//   - chain states, saved with the messages they numbered (CommitSigned).
//
// Durable appends are group-committed: concurrent Append calls share one
// synced Badger transaction, because Badger syncs its write-ahead log once per
// transaction and does not merge concurrent synced transactions itself.
// With a Presigner set and no reading pending, the committer has each batch
// signed first and stores the signed messages in that same transaction, so
// a reading is written once; otherwise readings are stored pending and
// signed later (CommitSigned). Both paths use the same keys, so a store
// written by either opens with the other.
// Run drives the committer and the retention and value-log GC schedule.
package storage
