package streamr

import "time"

// ProxyState is one connection to a Streamr node that accepts proxy
// connections, as the Streamr Network client reports it and the status
// page shows it.
type ProxyState struct {
	URL         string    `json:"url"`
	State       string    `json:"state"` // ProxyConnecting, ProxyConnected or ProxyBackoff
	Since       time.Time `json:"since"`
	MessagesIn  uint64    `json:"messages_in"`
	MessagesOut uint64    `json:"messages_out"`
	Errors      uint64    `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
}

// Proxy connection states.
const (
	ProxyConnecting = "connecting"
	ProxyConnected  = "connected"
	ProxyBackoff    = "backoff"
)
