package overlay

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Resource budget for libp2p on a Raspberry Pi: the resource manager
// scales its per-protocol limits from these.
const (
	hostMemory      = 128 << 20
	hostFDs         = 512
	connGracePeriod = time.Minute // new connections are not trimmed before this
)

// newHost builds the libp2p host: TCP with Noise and yamux, QUIC (TLS 1.3
// built in), connection and resource limits, and the NAT traversal that
// cfg enables. Static relays are the bootstrap peers.
func newHost(cfg *Config, key crypto.PrivKey, bootstrap []peer.AddrInfo, protected []peer.ID, refused *refusals) (host.Host, error) {
	cm, err := connmgr.NewConnManager(cfg.MaxConns*3/4, cfg.MaxConns, connmgr.WithGracePeriod(connGracePeriod))
	if err != nil {
		return nil, fmt.Errorf("overlay connection manager: %w", err)
	}
	rm, err := resourceManager(cfg, protected, refused)
	if err != nil {
		cm.Close()
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.UserAgent("tributary"),
	}
	if cfg.Registerer != nil {
		// One prefix for every metric the gateway serves: libp2p_* become
		// tributary_libp2p_*.
		opts = append(opts, libp2p.PrometheusRegisterer(prometheus.WrapRegistererWithPrefix("tributary_", cfg.Registerer)))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	if len(cfg.AnnounceAddrs) > 0 {
		announce, err := parseAddrs(cfg.AnnounceAddrs)
		if err != nil {
			rm.Close()
			cm.Close()
			return nil, err
		}
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return announce }))
	}
	opts = append(opts, natOptions(cfg, bootstrap)...)
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close() // both are safe to close twice, should libp2p have closed them
		cm.Close()
		return nil, fmt.Errorf("start overlay host on %v: %w", cfg.ListenAddrs, err)
	}
	return h, nil
}

func natOptions(cfg *Config, bootstrap []peer.AddrInfo) []libp2p.Option {
	var opts []libp2p.Option
	if cfg.DisableRelay {
		opts = append(opts, libp2p.DisableRelay())
	} else {
		// The relay service only runs once AutoNAT finds us publicly reachable.
		opts = append(opts, libp2p.EnableRelay(), libp2p.EnableRelayService())
		if len(bootstrap) > 0 {
			opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(bootstrap))
		}
		if !cfg.DisableHolePunching { // DCUtR coordinates over a relayed connection
			opts = append(opts, libp2p.EnableHolePunching())
		}
	}
	if !cfg.DisableAutoNAT {
		opts = append(opts, libp2p.EnableNATService(), libp2p.EnableAutoNATv2(), libp2p.NATPortMap())
	}
	return opts
}

// parsePeers reads multiaddrs with /p2p/ components, merging addresses of
// the same peer.
func parsePeers(addrs []string) ([]peer.AddrInfo, error) {
	mas := make([]ma.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap peer %q: %w", s, err)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("bootstrap peers: %w (each needs /p2p/<peer ID>)", err)
	}
	return infos, nil
}

// parseAddrs reads multiaddrs for AnnounceAddrs.
func parseAddrs(addrs []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("overlay announce address %q: %w", a, err)
		}
		out = append(out, m)
	}
	return out, nil
}
