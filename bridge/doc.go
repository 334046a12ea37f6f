// Package bridge is Tributary's pipeline, every role a gateway plays
// between its MQTT broker, its store and the overlay:
//
//   - mapping (Compile, Map): MQTT topics onto Streamr stream partitions,
//     with the content, partition key and timestamp rules of a [[rule]];
//   - ingest and signing (Pipeline): each reading is stored durably before
//     it is acknowledged, then signed in chain order behind the durable
//     write (or inside the same group commit when the key signs fast
//     enough: presign.go), so a slow signer never slows ingestion; Drain
//     signs what is left at a stop;
//   - forwarding (Forwarder): signed messages from the store into the
//     overlay, live ones by gossip and backlogs left for receivers to pull;
//   - ordering (Orderer): messages from the overlay in chain order without
//     duplicates, gaps filled by resend requests, positions persisted;
//   - delivery (Deliverer): ordered messages of [[subscribe]] rules onto
//     local MQTT topics;
//   - the storage node role (Storer): messages of [[store]] rules kept so
//     that this gateway answers resends for them;
//   - receipts (Receipts): which receivers hold which chains, so that
//     retention can wait for them;
//   - the HTTP API (HTTPServer): resends in the storage node's raw format,
//     metrics and health, with its limits and Host check.
//
// It defines the small interfaces it needs of the others (Log, ReceivedLog,
// ForwardLog, History, PositionStore for storage; Overlay, Topic, Resender,
// ReceiptNetwork for the overlay; LocalBroker for MQTT; Clock) and is
// assembled with the broker, storage, overlay and key backends by
// package gateway (interfaces live with their consumer: docs/conventions.md).
package bridge
