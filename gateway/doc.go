// Package gateway is the Tributary application: it reads the config file
// (bridge.toml: decoding with errors in the file's terms, defaults,
// validation) and assembles one gateway from it — key, storage, signing
// pipeline, MQTT broker, overlay, forwarding, delivery, storing, receipts
// and the HTTP API — the way cmd/bridge runs it.
//
// New checks a config and opens nothing; Run opens the state directory,
// serves until its context ends and stops every part in dependency order.
// The parts form one supervision tree: a part that fails stops Run with
// its error, and the watchdog and /healthz report the failure while the
// gateway drains. While the disk is too full to open storage, Run refuses
// readings instead of failing.
//
// The export, identity and key operations of the command line live here
// too, so that cmd/bridge holds only flags, subcommands and process
// concerns.
package gateway
