package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/streamr"
)

// Identity is what `bridge id` prints and GET /identity serves: enough to
// write another gateway's overlay.bootstrap.
type Identity struct {
	Publisher string   `json:"publisher"` // 0x… address, or the compressed P-256 key
	KeyType   string   `json:"key_type"`  // the signature type the key produces
	PeerID    string   `json:"peer_id,omitempty"`
	Addrs     []string `json:"addrs"` // dialable multiaddrs ending in /p2p/<peer ID>
	Source    string   `json:"source,omitempty"`
}

// identityPath is the HTTP API's identity endpoint.
const identityPath = "/identity"

func keyIdentity(k streamr.Signer) Identity {
	return Identity{Publisher: streamr.UserID(k.PublisherID()), KeyType: k.SignatureType().String(), Addrs: []string{}}
}

// identity is what GET /identity serves.
func (s *system) identity() Identity {
	id := keyIdentity(s.key)
	if s.node != nil {
		id.PeerID, id.Addrs = s.node.ID(), s.node.Addrs()
	}
	return id
}

// LookupIdentity asks the running gateway of cfg, else reads the state
// directory; a warning goes to warn when another gateway answers on
// cfg's HTTP address.
func LookupIdentity(ctx context.Context, cfg *Config, warn io.Writer) (Identity, error) {
	if running, err := runningIdentity(ctx, cfg); err == nil && sameGateway(cfg, running, warn) {
		return running, nil
	}
	return storedIdentity(ctx, cfg)
}

// sameGateway checks that the gateway answering on cfg's HTTP address has
// the peer ID of cfg's state directory (not another gateway's API on that
// address). It opens no key: a hardware or encrypted key stays closed
// while the gateway runs.
func sameGateway(cfg *Config, running Identity, warn io.Writer) bool {
	if !cfg.Overlay.Enabled || running.PeerID == "" {
		return true
	}
	stored, err := storedPeerID(cfg)
	if err != nil || stored == running.PeerID {
		return true // nothing stored to compare with
	}
	fmt.Fprintf(warn, "bridge id: the gateway answering on %s has peer ID %s, not this config's %s: showing the state directory\n", cfg.HTTP.Address, running.PeerID, stored)
	return false
}

// storedPeerID is the overlay peer ID persisted in cfg's state directory.
func storedPeerID(cfg *Config) (string, error) {
	ocfg, err := cfg.overlayConfig(nil, nil)
	if err != nil {
		return "", err
	}
	return overlay.StoredPeerID(ocfg.IdentityFile)
}

// ownIdentity is the identity stored in cfg's state directory, to compare
// with a running gateway's: the overlay peer ID when byPeer and one is
// stored, as it needs no key (a hardware or encrypted key stays closed
// while the gateway runs), else the gateway key's publisher.
func ownIdentity(ctx context.Context, cfg *Config, byPeer bool) (Identity, error) {
	if byPeer {
		if id, err := storedPeerID(cfg); err == nil {
			return Identity{PeerID: id}, nil
		}
	}
	key, err := openKey(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return Identity{}, err
	}
	defer key.Close()
	return keyIdentity(key), nil
}

// matches reports whether running is the gateway whose stored identity
// (ownIdentity) is id.
func (id Identity) matches(running Identity) bool {
	if id.PeerID != "" {
		return id.PeerID == running.PeerID
	}
	return strings.EqualFold(id.Publisher, running.Publisher)
}

// brief names id by its peer ID (byPeer) or its publisher, for an error.
func (id Identity) brief(byPeer bool) string {
	if byPeer {
		return "peer ID " + id.PeerID
	}
	return "publisher " + id.Publisher
}

// runningIdentity asks the gateway whose HTTP API listens on cfg's
// http.address, with cfg's API key.
func runningIdentity(ctx context.Context, cfg *Config) (Identity, error) {
	if cfg.HTTP.Address == "" {
		return Identity{}, errors.New("http api disabled")
	}
	url := "http://" + dialAddress(cfg.HTTP.Address) + identityPath
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := newAPIRequest(ctx, cfg, http.MethodGet, url)
	if err != nil {
		return Identity{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Identity{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Identity{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var id Identity
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&id); err != nil {
		return Identity{}, fmt.Errorf("GET %s: %w", url, err)
	}
	id.Source = "running gateway (" + url + ")"
	return id, nil
}

// HTTPURL is the base URL of cfg's HTTP API, to reach the gateway that
// runs with it.
func (c *Config) HTTPURL() (string, error) {
	if c.HTTP.Address == "" {
		return "", errors.New("http.address is empty: the HTTP API is disabled in this config")
	}
	return "http://" + dialAddress(c.HTTP.Address), nil
}

// dialAddress turns a listen address such as 0.0.0.0:7171 into one to dial.
func dialAddress(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// storedIdentity reads the key and the persisted overlay identity of a
// gateway that is not running; it creates nothing.
func storedIdentity(ctx context.Context, cfg *Config) (Identity, error) {
	uri := cfg.KeyURI()
	key, err := hw.Open(ctx, uri, cfg.KeyOptions(slog.New(slog.DiscardHandler)))
	if errors.Is(err, hw.ErrNoKey) {
		return Identity{}, fmt.Errorf("no gateway key at %s yet: start the gateway once (bridge run) or create one (bridge key new)", uri)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("gateway key %s: %w", uri, err)
	}
	defer key.Close()
	id := keyIdentity(key)
	id.Source = "state directory " + cfg.StateDir + " (the gateway is not running)"
	if !cfg.Overlay.Enabled {
		return id, nil
	}
	ocfg, err := cfg.overlayConfig(nil, nil)
	if err != nil {
		return Identity{}, err
	}
	if id.PeerID, id.Addrs, err = overlay.StoredIdentity(ocfg); err != nil {
		if errors.Is(err, overlay.ErrNoIdentity) {
			return Identity{}, fmt.Errorf("%w: start the gateway once (bridge run) to create it", err)
		}
		return Identity{}, err
	}
	return id, nil
}

// WriteText writes id as `bridge id` prints it.
func (id Identity) WriteText(w io.Writer) {
	fmt.Fprintf(w, "publisher  %s\nkey type   %s\n", id.Publisher, id.KeyType)
	if id.PeerID == "" {
		fmt.Fprintln(w, "peer ID    (overlay disabled)")
	} else {
		fmt.Fprintf(w, "peer ID    %s\n", id.PeerID)
	}
	for _, a := range id.Addrs {
		fmt.Fprintf(w, "address    %s\n", a)
	}
	fmt.Fprintf(w, "source     %s\n", id.Source)
}
