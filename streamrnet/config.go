package streamrnet

import (
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits bound what a remote node can make this client hold or do.
// Zero values take the defaults.
type Limits struct {
	MaxFrameBytes      int           // largest frame read (Streamr's own limit is 1 MiB)
	MaxFramesPerSecond int           // frames read per second per proxy; more are dropped and counted
	MaxPendingRequests int           // outstanding requests per proxy
	RequestTimeout     time.Duration // an RPC, the handshake and a write
	DedupWindow        int           // message IDs remembered to drop what several proxies deliver twice
	MinBackoff         time.Duration // first reconnect delay
	MaxBackoff         time.Duration // reconnect delays double up to this
}

// Defaults of Limits.
const (
	DefaultMaxFrameBytes      = 1 << 20
	DefaultMaxFramesPerSecond = 5000
	DefaultMaxPendingRequests = 64
	DefaultRequestTimeout     = 15 * time.Second
	DefaultDedupWindow        = 65536
	DefaultMinBackoff         = time.Second
	DefaultMaxBackoff         = 30 * time.Second
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxFrameBytes, DefaultMaxFrameBytes)
	def(&l.MaxFramesPerSecond, DefaultMaxFramesPerSecond)
	def(&l.MaxPendingRequests, DefaultMaxPendingRequests)
	def(&l.DedupWindow, DefaultDedupWindow)
	defDur(&l.RequestTimeout, DefaultRequestTimeout)
	defDur(&l.MinBackoff, DefaultMinBackoff)
	defDur(&l.MaxBackoff, DefaultMaxBackoff)
	return l
}

// Config configures a Client.
type Config struct {
	Proxies []string // ws:// or wss:// URLs of nodes accepting proxy connections
	UserID  []byte   // the gateway's publisher ID (20-byte address, or 33-byte P-256 key): the proxies' userId
	Dialer  Dialer
	Limits  Limits
	// Deliver gets every message the proxies deliver on a subscribed
	// stream partition, once even if several proxies deliver it. It runs
	// on a proxy's read loop: it must not block for long.
	Deliver func(streamPart string, raw []byte)
	// ProtocolVersion overrides ProtocolVersion (tests of version mismatch).
	ProtocolVersion string
	Registerer      prometheus.Registerer
	Logger          *slog.Logger
}

// ValidateProxyURL checks one proxies entry.
func ValidateProxyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("proxy URL %q: %w", s, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("proxy URL %q: scheme %q, want ws or wss", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("proxy URL %q: no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("proxy URL %q: Streamr nodes serve WebSocket at the root, with no path, query or user", s)
	}
	return nil
}

func (c Config) validate() error {
	if len(c.Proxies) == 0 {
		return fmt.Errorf("streamr network: no proxies")
	}
	seen := make(map[string]bool)
	for _, p := range c.Proxies {
		if err := ValidateProxyURL(p); err != nil {
			return fmt.Errorf("streamr network: %w", err)
		}
		if seen[p] {
			return fmt.Errorf("streamr network: proxy URL %q listed twice", p)
		}
		seen[p] = true
	}
	if len(c.UserID) != 20 && len(c.UserID) != 33 {
		return fmt.Errorf("streamr network: userId is %d bytes, want a 20-byte address or a 33-byte P-256 key", len(c.UserID))
	}
	if c.Dialer == nil {
		return fmt.Errorf("streamr network: no dialer")
	}
	return nil
}
