// Package bridge is Tributary's pipeline: it maps MQTT topics onto Streamr
// stream partitions, stores each reading durably before it is
// acknowledged, and signs stored readings in chain order behind the durable
// write, so a slow signer never slows ingestion.
//
// It defines the small interfaces it needs (Log for storage, Clock) and is
// wired to the broker, storage and key backends by cmd/bridge.
package bridge
