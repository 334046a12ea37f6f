package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// accounts is the users file in force and which entry each connected client authenticated
// as, so that a reload can tell which connections still hold valid credentials.
type accounts struct {
	path string

	mu      sync.RWMutex
	current users
	authed  map[*mqtt.Client]*user // the entry each client's password was checked against
}

func newAccounts(path string, us users) *accounts {
	return &accounts{path: path, current: us, authed: map[*mqtt.Client]*user{}}
}

func (a *accounts) lookup(name string) *user {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.current[name]
}

// admit records that cl authenticated as u, unless a reload replaced u meanwhile.
func (a *accounts) admit(cl *mqtt.Client, u *user) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current[u.Name] != u {
		return false
	}
	a.authed[cl] = u
	return true
}

func (a *accounts) forget(cl *mqtt.Client) {
	a.mu.Lock()
	delete(a.authed, cl)
	a.mu.Unlock()
}

// replace puts us in force and returns the clients whose credentials it invalidated: their
// user is gone or has another password hash. A changed ACL alone keeps the connection, as
// every publish, subscription and delivery is checked against the ACL in force.
func (a *accounts) replace(us users) []*mqtt.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.current = us
	var stale []*mqtt.Client
	for cl, u := range a.authed {
		switch nu := us[u.Name]; {
		case cl.Closed():
			delete(a.authed, cl) // never reached OnDisconnect (e.g. its CONNACK failed)
		case nu == nil || nu.PasswordHash != u.PasswordHash:
			delete(a.authed, cl)
			stale = append(stale, cl)
		default:
			a.authed[cl] = nu
		}
	}
	return stale
}

// usersDiff lists the user names added, removed and changed (hash or ACL) from old to new.
func usersDiff(old, new users) (added, removed, changed []string) {
	for name, u := range new {
		o, ok := old[name]
		switch {
		case !ok:
			added = append(added, name)
		case o.PasswordHash != u.PasswordHash || !slices.Equal(o.Publish, u.Publish) || !slices.Equal(o.Subscribe, u.Subscribe):
			changed = append(changed, name)
		}
	}
	for name := range old {
		if _, ok := new[name]; !ok {
			removed = append(removed, name)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

// certificate holds a listener's TLS certificate, replaceable while the listener serves.
type certificate struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	cert, err := c.load()
	if err != nil {
		return nil, err
	}
	c.cert.Store(cert)
	return c, nil
}

func (c *certificate) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	return &cert, nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil }

// Reload reads the users file (with its ACLs) and the TLS certificates again, as on SIGHUP.
// Either everything loads and takes effect, or nothing changes and the error says what is
// broken. Connected clients whose user was removed or whose password hash changed are
// disconnected (MQTT 5: reason 0x87); the others keep their connections under the new ACLs.
// New TLS handshakes use the new certificates.
func (b *Broker) Reload() error {
	var us users
	if b.hook.accounts != nil {
		var err error
		if us, err = loadUsers(b.hook.accounts.path); err != nil {
			return fmt.Errorf("broker: reload: %w", err)
		}
	}
	certs := make([]*tls.Certificate, len(b.listeners))
	for i, l := range b.listeners {
		if l.cert == nil {
			continue
		}
		cert, err := l.cert.load()
		if err != nil {
			return fmt.Errorf("broker: reload: listener %s: %w", l.id, err)
		}
		certs[i] = cert
	}
	for i, l := range b.listeners {
		if certs[i] != nil {
			l.cert.cert.Store(certs[i])
			b.log.Info("tls certificate reloaded", "listener", l.id, "cert_file", l.cert.certFile)
		}
	}
	if b.hook.accounts != nil {
		b.reloadUsers(us)
	}
	return nil
}

func (b *Broker) reloadUsers(us users) {
	a := b.hook.accounts
	a.mu.RLock()
	added, removed, changed := usersDiff(a.current, us)
	a.mu.RUnlock()
	stale := a.replace(us)
	b.log.Info("users file reloaded", "file", a.path, "users", len(us),
		"added", added, "removed", removed, "changed", changed, "disconnecting", len(stale))
	for _, cl := range stale {
		b.stats.reloadDisconnects.Add(1)
		b.log.Warn("disconnecting client: its credentials are no longer in the users file",
			"client", cl.ID, "username", string(cl.Properties.Username), "remote", cl.Net.Remote)
		b.disconnect(cl, packets.ErrNotAuthorized)
	}
}

// disconnect sends an MQTT 5 client a DISCONNECT with code and closes the connection, with a
// bounded wait for a client that does not read. MQTT 3.1.1 has no server DISCONNECT: the
// connection is just closed.
func (b *Broker) disconnect(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion < 5 {
		cl.Stop(code)
		return
	}
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	}
	if err := b.srv.DisconnectClient(cl, code); err != nil && !errors.Is(err, code) {
		b.log.Debug("disconnect", "client", cl.ID, "err", err)
	}
}
