package overlay

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ErrNoIdentity means the identity file does not exist yet: the node has
// never started.
var ErrNoIdentity = errors.New("no overlay identity yet")

// Check reports what New would refuse in cfg (limits, bootstrap and
// protected peers without /p2p/, listen and announce addresses that do not parse) without
// listening or touching the identity file.
func (cfg Config) Check() error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	for _, b := range cfg.BootstrapPeers {
		if _, err := parsePeers([]string{b}); err != nil {
			return fmt.Errorf("overlay bootstrap peer %q: %w", b, err)
		}
	}
	if _, err := parseProtected(cfg.ProtectedPeers); err != nil {
		return fmt.Errorf("overlay config: %w", err)
	}
	for _, a := range cfg.ListenAddrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("overlay listen address %q: %w", a, err)
		}
	}
	_, err := parseAddrs(cfg.AnnounceAddrs)
	return err
}

// StoredIdentity reads the peer ID that cfg.IdentityFile holds, and the
// addresses other nodes can dial it on when it runs with cfg: the announce
// addresses if set, else the listen addresses with unspecified IPs (0.0.0.0,
// ::) replaced by this machine's interface addresses. Listen addresses on
// port 0 get their port only when the node starts and are left out. It
// fails with ErrNoIdentity if the node never started.
func StoredIdentity(cfg Config) (id string, addrs []string, err error) {
	cfg.setDefaults()
	pid, err := storedPeer(cfg.IdentityFile)
	if err != nil {
		return "", nil, err
	}
	mas, err := dialable(cfg)
	if err != nil {
		return "", nil, err
	}
	p2p, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: pid, Addrs: mas})
	if err != nil {
		return "", nil, err
	}
	for _, a := range p2p {
		addrs = append(addrs, a.String())
	}
	return pid.String(), addrs, nil
}

// StoredPeerID reads the peer ID that the identity file at path holds,
// without the addresses StoredIdentity resolves: enough to tell which
// node a running one is. It fails with ErrNoIdentity if the file does not
// exist.
func StoredPeerID(path string) (string, error) {
	pid, err := storedPeer(path)
	if err != nil {
		return "", err
	}
	return pid.String(), nil
}

func storedPeer(path string) (peer.ID, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist", ErrNoIdentity, path)
	}
	if err != nil {
		return "", fmt.Errorf("read identity file: %w", err)
	}
	key, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return "", fmt.Errorf("identity file %s: %w", path, err)
	}
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("identity file %s: %w", path, err)
	}
	return pid, nil
}

func dialable(cfg Config) ([]ma.Multiaddr, error) {
	if len(cfg.AnnounceAddrs) > 0 {
		return parseAddrs(cfg.AnnounceAddrs)
	}
	var listen []ma.Multiaddr
	for _, s := range cfg.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("overlay listen address %q: %w", s, err)
		}
		if port0(a) {
			continue
		}
		listen = append(listen, a)
	}
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out, err := manet.ResolveUnspecifiedAddresses(listen, ifaces)
	if err != nil {
		return nil, fmt.Errorf("resolve listen addresses: %w", err)
	}
	return out, nil
}

func port0(a ma.Multiaddr) bool {
	for _, code := range []int{ma.P_TCP, ma.P_UDP} {
		if v, err := a.ValueForProtocol(code); err == nil && v == "0" {
			return true
		}
	}
	return false
}
