package appapi

import "time"

// Defaults of the WebSocket interface's limits.
const (
	// DefaultPingInterval and DefaultDisconnectTimeout are the node's:
	// ping an idle connection every 15 s, drop it 15 s later without a pong.
	DefaultPingInterval      = 15 * time.Second
	DefaultDisconnectTimeout = 15 * time.Second
	// DefaultWSWriteTimeout bounds one write to a subscriber: one that
	// does not read for this long is disconnected (it can resume with from=).
	DefaultWSWriteTimeout = 10 * time.Second
	DefaultMaxConnections = 64
	// DefaultMaxResend is the largest last=N a subscriber may ask for.
	DefaultMaxResend = 100_000
)
