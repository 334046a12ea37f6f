package broker

import (
	"context"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Defaults of the admission limits.
const (
	DefaultMaxConnsPerUser   = 128 // half the client slots: one account cannot take them all
	DefaultMaxConnsPerSource = 64  // connections (before and after CONNECT) per source IP
	// DefaultMaxKeepAlive is the longest keep-alive the broker grants: MQTT 5 clients asking
	// for more (or 0, none) get it as Server Keep Alive in the CONNACK; an MQTT 3.1.1 client
	// silent for 1.5 times it is disconnected, so silent clients cannot hold client slots.
	DefaultMaxKeepAlive = 5 * time.Minute
	// DefaultMaxConcurrentAuth bounds the bcrypt comparisons running at once, so that password
	// guessing cannot take every core; CONNECTs beyond it wait up to authQueueTimeout.
	DefaultMaxConcurrentAuth = 2
	// DefaultAuthBackoffMax caps the wait imposed on a source address or user name after
	// failed passwords; it doubles from authBackoffBase with each failure and resets on success.
	DefaultAuthBackoffMax = 30 * time.Second
	// DefaultMaxSessions bounds sessions (connected or stored); 3,000 offline sessions
	// subscribed to one topic took the process from 44 MB to 480 MB (issue #13).
	DefaultMaxSessions = 1024
)

const (
	authBackoffBase  = 250 * time.Millisecond
	authQueueTimeout = 5 * time.Second
	maxBackoffKeys   = 4096 // entries kept per backoff table; expired ones are pruned first
)

// authGate bounds the cost of password checks: a semaphore for concurrent bcrypt comparisons,
// and exponential backoff per source address and per user name after failures. A CONNECT from
// a source or for a user in backoff waits for the backoff to pass before its password is
// checked (whatever the password), so a guesser's rate halves with every failure while a
// legitimate client is only delayed, never locked out.
type authGate struct {
	disabled bool // no backoff (AuthBackoffMax < 0)
	slots    chan struct{}
	sources  backoff
	names    backoff
}

func newAuthGate(concurrent int, maxBackoff time.Duration) *authGate {
	return &authGate{
		disabled: maxBackoff < 0,
		slots:    make(chan struct{}, concurrent),
		sources:  backoff{max: maxBackoff, entries: map[string]*backoffEntry{}},
		names:    backoff{max: maxBackoff, entries: map[string]*backoffEntry{}},
	}
}

// acquire waits for a bcrypt slot; false if none frees up in time or ctx ends.
func (g *authGate) acquire(ctx context.Context) bool {
	t := time.NewTimer(authQueueTimeout)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (g *authGate) release() { <-g.slots }

// delay returns how long a password check for source and name must wait: until the backoff of
// both has passed.
func (g *authGate) delay(source, name string, now time.Time) time.Duration {
	if g.disabled {
		return 0
	}
	return max(g.sources.remaining(source, now), g.names.remaining(name, now))
}

// begin marks a password check of source and name as running: until its result, other checks
// of the same source or name wait, so that parallel guessers get one check at a time per
// source and user name (legitimate clients sharing either are serialised too, ~80 ms each on
// a Raspberry Pi 4 at cost 10).
func (g *authGate) begin(source, name string) {
	if g.disabled {
		return
	}
	g.sources.begin(source)
	g.names.begin(name)
}

// result records the outcome of a password check.
func (g *authGate) result(source, name string, ok bool, now time.Time) {
	if g.disabled {
		return
	}
	g.sources.end(source)
	g.names.end(name)
	if ok {
		g.sources.reset(source)
		g.names.reset(name)
		return
	}
	g.sources.fail(source, now)
	g.names.fail(name, now)
}

type backoff struct {
	max     time.Duration
	mu      sync.Mutex
	entries map[string]*backoffEntry
}

type backoffEntry struct {
	failures int
	until    time.Time
	checking int // password checks running now
}

func (b *backoff) begin(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	if e == nil {
		if len(b.entries) >= maxBackoffKeys {
			b.prune(time.Now())
		}
		e = &backoffEntry{}
		b.entries[key] = e
	}
	e.checking++
}

func (b *backoff) end(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.entries[key]; e != nil && e.checking > 0 {
		e.checking--
	}
}

func (b *backoff) remaining(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	switch {
	case e == nil:
		return 0
	case now.Before(e.until):
		return e.until.Sub(now)
	case e.checking > 0:
		return authBackoffBase / 5 // a check of this key is running: wait for its outcome
	}
	return 0
}

func (b *backoff) fail(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	if e == nil {
		if len(b.entries) >= maxBackoffKeys {
			b.prune(now)
		}
		e = &backoffEntry{}
		b.entries[key] = e
	}
	e.failures++
	d := b.max
	if shift := e.failures - 1; shift < 16 {
		d = min(authBackoffBase<<shift, b.max)
	}
	e.until = now.Add(d)
}

func (b *backoff) reset(key string) {
	b.mu.Lock()
	if e := b.entries[key]; e != nil {
		if e.checking > 0 {
			e.failures, e.until = 0, time.Time{}
		} else {
			delete(b.entries, key)
		}
	}
	b.mu.Unlock()
}

// prune drops expired entries, or every entry if none has expired (a flood of distinct keys).
func (b *backoff) prune(now time.Time) {
	for k, e := range b.entries {
		if e.checking == 0 && !now.Before(e.until.Add(b.max)) {
			delete(b.entries, k)
		}
	}
	if len(b.entries) >= maxBackoffKeys {
		clear(b.entries)
	}
}

// sourceIP is the address part of a remote "host:port".
func sourceIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// OnConnect caps the keep-alive (mochi sends cl.State.Keepalive as Server Keep Alive to MQTT 5
// clients when ServerKeepalive is set, server.go:615, and bases the read deadline on it).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	maxKA := uint16(h.maxKeepAlive / time.Second)
	if maxKA > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA) {
		cl.State.Keepalive = maxKA
		cl.State.ServerKeepalive = true
	}
	return nil
}

// admitUser refuses a connection of user name beyond the per-user limit. Connected clients
// are counted in mochi's client list (no counter to leak); a connection that takes over its
// own user's session replaces that one and is not counted against it.
func (h *hook) admitUser(cl *mqtt.Client, name string) bool {
	if h.maxConnsPerUser <= 0 {
		return true
	}
	n := 0
	for id, other := range h.srv.Clients.GetAll() {
		if id != cl.ID && !other.Closed() && other.Net.Conn != nil && string(other.Properties.Username) == name {
			n++
		}
	}
	if n < h.maxConnsPerUser {
		return true
	}
	h.stats.refused[refuseUserConns].Add(1)
	h.rlog.Warn("user connections", "connection refused: the user has the maximum number of connections",
		"client", clip(cl.ID), "username", clip(name), "limit", h.maxConnsPerUser, "remote", cl.Net.Remote)
	return false
}
