// Package storage is Tributary's durable store, built on Badger. It is the
// only package that imports Badger.
//
// It holds six kinds of data (key layout in keys.go):
//   - pending readings: MQTT readings accepted before the PUBACK and not yet
//     signed, in ingest order (Append, Enqueue, Pending);
//   - signed messages: encoded Streamr messages in log order for the
//     forwarder (After) and in (timestamp, sequence number, publisher, chain)
//     order per stream part for resends (Messages, Parts);
//   - received messages: what other publishers signed, kept by a node that
//     stores their streams, in the same log and index (StoreReceived);
//   - chain states: this gateway's own chains, saved with the messages they
//     numbered (CommitSigned), and the positions of the receivers of other
//     chains (SaveChainStates), of which the storage role's are the
//     receipts it acknowledges (Receipts);
//   - cursors: named log positions of the log's consumers, the forwarder's
//     per partition (Cursor, SetCursors);
//   - MQTT sessions: the broker's persistent session records, kept in its
//     own layout (ScanSessions, CommitSessions).
//
// Signed and received messages count against retention (oldest first).
// Readings are refused beyond the quota and when the file system's free
// space falls below a margin; as space runs low, the files Badger writes
// through mmap are preallocated, so a full disk is an error, not a SIGBUS
// (space.go).
//
// Durable appends are group-committed: concurrent Append calls share one
// synced Badger transaction, because Badger syncs its write-ahead log once per
// transaction and does not merge concurrent synced transactions itself.
// With a Presigner set and no reading pending, the committer has each batch
// signed first and stores the signed messages in that same transaction, so
// a reading is written once; otherwise readings are stored pending and
// signed later (CommitSigned). Both paths use the same keys, so a store
// written by either opens with the other.
//
// Badger caps a transaction at 15 % of a memtable (157 kB with the store's
// 1 MB memtables, kept small for the heap), so every writer whose batch
// depends on its input writes it through a txnSplit (txnsplit.go), split
// only where a crash leaves a sound state: between messages with their
// chains' states (CommitSigned), positions after the messages they cover
// (StoreReceived), independent keys anywhere; the broker's session batches
// stay all or nothing (putAtomic).
// Run drives the committer and the retention and value-log GC schedule.
package storage
