package statuspage

import (
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// SchemaVersion is the version of the /status document (docs/status.md).
// Fields are only ever added within a version; a change that renames,
// removes or changes the meaning of a field increments it.
const SchemaVersion = 1

// Status is the /status document: what the gateway knows about itself
// and its network at one moment. The gateway fills the facts; the server
// adds Seq, Time, the rates, the sparklines and the backlog's drain.
type Status struct {
	SchemaVersion  int            `json:"schema_version"`
	Seq            uint64         `json:"seq"` // increases with every snapshot
	Time           time.Time      `json:"time"`
	Version        string         `json:"version"`
	UptimeSeconds  float64        `json:"uptime_seconds"`
	SampleSeconds  float64        `json:"sample_seconds"` // the spacing of the sparklines' points
	Health         Health         `json:"health"`
	Identity       Identity       `json:"identity"`
	Clock          Clock          `json:"clock"`
	MQTT           MQTT           `json:"mqtt"`
	Storage        Storage        `json:"storage"`
	Readings       Readings       `json:"readings"`
	Forward        *Forward       `json:"forward"` // null without the overlay
	Overlay        *Overlay       `json:"overlay"` // null: overlay.enabled = false
	Partitions     []Partition    `json:"partitions"`
	Nodes          []Node         `json:"nodes"`
	Orderers       []Orderer      `json:"orderers"`
	StreamrNetwork StreamrNetwork `json:"streamr_network"`
}

// Health is the gateway's health as /healthz and the watchdog see it.
type Health struct {
	OK    bool   `json:"ok"`
	State string `json:"state"` // online, buffering (messages wait for peers) or fault, as the LED shows
	Error string `json:"error"` // why not OK; "" when OK
}

// Identity is who the gateway is.
type Identity struct {
	Publisher  string   `json:"publisher"`   // 0x… address, or the compressed P-256 key
	KeyType    string   `json:"key_type"`    // the signature type
	KeyBackend string   `json:"key_backend"` // where the key lives: file, tpm, pkcs11, ecc
	PeerID     string   `json:"peer_id"`     // "" with the overlay disabled
	Addrs      []string `json:"addrs"`       // dialable overlay multiaddrs
}

// Clock is the system clock's synchronisation, which readings are
// timestamped with.
type Clock struct {
	Synced          bool    `json:"synced"`
	MaxErrorSeconds float64 `json:"max_error_seconds"`
	Error           string  `json:"error,omitempty"` // the sync state could not be read
	Policy          string  `json:"policy"`          // signing.on_unsynced_clock: sign or hold
	SigningHeld     bool    `json:"signing_held"`
}

// MQTT is the embedded broker.
type MQTT struct {
	Clients   int      `json:"clients"` // connected now
	Listeners []string `json:"listeners"`
}

// Storage is the on-disk log.
type Storage struct {
	UsedBytes       int64 `json:"used_bytes"`  // LSM tree, WAL and value log
	QuotaBytes      int64 `json:"quota_bytes"` // storage.quota
	FreeBytes       int64 `json:"free_bytes"`  // on the file system, as last checked
	SignedBytes     int64 `json:"signed_bytes"`
	PendingReadings int64 `json:"pending_readings"` // stored, not yet signed
}

// Readings counts what the sensors sent since the gateway started.
type Readings struct {
	In       uint64            `json:"in"`     // accepted and stored
	Signed   uint64            `json:"signed"` // signed into Streamr messages
	Rejected map[string]uint64 `json:"rejected"`
	// RatePerSecond is readings in per second over the last sample.
	RatePerSecond float64 `json:"rate_per_second"`
}

// Forward is the forwarder: signed messages on their way into the overlay.
type Forward struct {
	BacklogMessages uint64 `json:"backlog_messages"`
	HoldingBack     bool   `json:"holding_back"` // some partition has no peers to take its messages
	Partitions      int    `json:"partitions"`   // joined for forwarding
	Drain           *Drain `json:"drain"`        // null while there is no backlog
}

// Drain is the progress of a backlog being forwarded.
type Drain struct {
	Since         time.Time `json:"since"`     // when the backlog began
	Peak          uint64    `json:"peak"`      // the largest backlog since
	Remaining     uint64    `json:"remaining"` // = backlog_messages
	Percent       float64   `json:"percent"`   // of the peak forwarded
	RatePerSecond float64   `json:"rate_per_second"`
	// ETASeconds is null while the backlog is not shrinking.
	ETASeconds *float64 `json:"eta_seconds"`
}

// Overlay is the peer-to-peer node.
type Overlay struct {
	ConnectedPeers int  `json:"connected_peers"`
	PenalisedPeers int  `json:"penalised_peers"`
	DHT            bool `json:"dht"`
}

// Partition is one stream partition the gateway carries.
type Partition struct {
	ID        string   `json:"id"` // streamID#partition
	Stream    string   `json:"stream"`
	Partition int      `json:"partition"`
	Roles     []string `json:"roles"` // forward, subscribe, store, stored
	// Peers and Neighbours are the members connected (pubsub's ListPeers)
	// and those in the mesh, as tributary_overlay_peers and _neighbours.
	Peers        int      `json:"peers"`
	Neighbours   int      `json:"neighbours"`
	PeerIDs      []string `json:"peer_ids"`
	NeighbourIDs []string `json:"neighbour_ids"`
	Providers    []string `json:"providers"` // DHT provider records, looked up every 30 s
	MessagesIn   uint64   `json:"messages_in"`
	MessagesOut  uint64   `json:"messages_out"`
	// RatePerSecond is messages in and out per second over the last
	// sample; Rate holds it for the last minutes, oldest first.
	RatePerSecond float64    `json:"rate_per_second"`
	Rate          []float64  `json:"rate"`
	LastMessage   *time.Time `json:"last_message"` // within one sample; null: none since start
	// HeldSince is when the forwarder began to hold this partition's
	// messages back in storage for want of peers; null: not held.
	HeldSince *time.Time `json:"held_since"`
	// Receipts: receiver peer ID → chain ID → the newest message it holds.
	Receipts map[string]map[string]Ref `json:"receipts"`
	Drops    map[string]uint64         `json:"drops"` // rejected or dropped from peers, by reason
}

// Ref is a message's position in its chain.
type Ref struct {
	Timestamp      int64 `json:"timestamp"`
	SequenceNumber int32 `json:"sequence_number"`
}

// Node is a node the gateway knows: itself, a connected overlay peer, a
// DHT provider of one of its partitions, or a Streamr Network proxy.
type Node struct {
	ID         string   `json:"id"`   // peer ID, or a proxy's URL
	Kind       string   `json:"kind"` // self, peer, provider, proxy
	Addrs      []string `json:"addrs"`
	Partitions []string `json:"partitions"` // the stream partitions it carries with this gateway
	Connected  bool     `json:"connected"`
	Protected  bool     `json:"protected,omitempty"` // bootstrap or protected peer
	Score      float64  `json:"score"`               // GossipSub score
}

// Orderer is one in-order delivery (the subscriptions', the storer's):
// its gaps and how they were filled.
type Orderer struct {
	Name      string `json:"name"`
	Delivered uint64 `json:"delivered"`
	Gaps      uint64 `json:"gaps"`
	Filled    uint64 `json:"filled"` // messages recovered by resend
	Lost      uint64 `json:"lost"`   // gaps given up
}

// StreamrNetwork is the connection into the real Streamr Network.
type StreamrNetwork struct {
	Configured bool `json:"configured"` // false: no [streamr_network] table
	// Proxies are the client's connections, as streamrnet reports them
	// (url, state, since, messages_in, messages_out, errors, last_error).
	Proxies []streamr.ProxyState `json:"proxies"`
}
