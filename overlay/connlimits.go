package overlay

import (
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"
)

// Prefix lengths of an "address" and a "subnet" for the per-IP limits.
const (
	ip4Subnet = 24
	ip6Host   = 64 // one host often holds a whole /64
	ip6Subnet = 48
)

// resourceManager caps connections at twice the connection manager's high
// watermark (inbound at the watermark), per address and per subnet, and
// scales stream and memory limits to a small machine. Protected peers are
// allowlisted: their connections use the allowlisted scope when the
// inbound slots are all taken. Refused connections are counted.
func resourceManager(cfg *Config, protected []peer.ID, refused *refusals) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	partial := rcmgr.PartialLimitConfig{System: rcmgr.ResourceLimits{
		Conns:         rcmgr.LimitVal(2 * cfg.MaxConns),
		ConnsInbound:  rcmgr.LimitVal(cfg.MaxConns),
		ConnsOutbound: rcmgr.LimitVal(2 * cfg.MaxConns),
	}}
	allow, err := allowlist(protected)
	if err != nil {
		return nil, err
	}
	perIP, perSubnet := cfg.MaxConnsPerIP, cfg.MaxConnsPerSubnet
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(partial.Build(limits.Scale(hostMemory, hostFDs))),
		rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: perIP}, {PrefixLength: ip4Subnet, ConnCount: perSubnet}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: ip6Host, ConnCount: perIP}, {PrefixLength: ip6Subnet, ConnCount: perSubnet}}),
		// No exemption for loopback (libp2p's default): a hostile process
		// on the gateway is a hostile peer like any other.
		rcmgr.WithNetworkPrefixLimit([]rcmgr.NetworkPrefixLimit{}, []rcmgr.NetworkPrefixLimit{}),
		rcmgr.WithAllowlistedMultiaddrs(allow),
	)
	if err != nil {
		return nil, fmt.Errorf("overlay resource manager: %w", err)
	}
	return &countingRM{ResourceManager: rm, refused: refused}, nil
}

// allowlist lets each protected peer in from any address: the resource
// manager checks the peer ID once the handshake has authenticated it, and
// moves any other peer back to the ordinary, full scope, which refuses it.
func allowlist(protected []peer.ID) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, 2*len(protected))
	for _, id := range protected {
		for _, everywhere := range []string{"/ip4/0.0.0.0/ipcidr/0", "/ip6/::/ipcidr/0"} {
			a, err := ma.NewMultiaddr(everywhere + "/p2p/" + id.String())
			if err != nil {
				return nil, fmt.Errorf("allowlist protected peer %s: %w", id, err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// countingRM counts and logs the connections the resource manager refuses.
type countingRM struct {
	network.ResourceManager
	refused *refusals
}

func (r *countingRM) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	s, err := r.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if dir != network.DirInbound {
		return s, err
	}
	if err != nil {
		rule := ruleConnsFull
		if !errors.Is(err, network.ErrResourceLimitExceeded) && strings.Contains(err.Error(), "limit exceeded") {
			rule = ruleConnsPerIP // per-IP count or connection rate: rcmgr has no typed error for them
		}
		r.refuse(rule, endpoint, err)
		return nil, err
	}
	return &countingConnScope{ConnManagementScope: s, rm: r, endpoint: endpoint}, nil
}

func (r *countingRM) refuse(rule string, endpoint ma.Multiaddr, err error) {
	r.refused.refuse(rule, 1, "inbound overlay connection refused", "remote", hostPart(endpoint), "err", err)
}

// countingConnScope counts an inbound connection refused once its peer
// is known: one let in by the allowlist (any address may be a protected
// peer's) that turns out to be another peer, with the ordinary slots full.
type countingConnScope struct {
	network.ConnManagementScope
	rm       *countingRM
	endpoint ma.Multiaddr
}

func (s *countingConnScope) SetPeer(p peer.ID) error {
	err := s.ConnManagementScope.SetPeer(p)
	if err != nil {
		s.rm.refuse(ruleConnsFull, s.endpoint, err)
	}
	return err
}

// hostPart is the IP of a multiaddr, or the whole address if it has none.
func hostPart(a ma.Multiaddr) string {
	for _, code := range []int{ma.P_IP4, ma.P_IP6} {
		if v, err := a.ValueForProtocol(code); err == nil {
			return v
		}
	}
	return a.String()
}

// parseProtected reads ProtectedPeers: peer IDs or multiaddrs ending in
// /p2p/<peer ID>.
func parseProtected(entries []string) ([]peer.ID, error) {
	out := make([]peer.ID, 0, len(entries))
	for _, e := range entries {
		if id, err := peer.Decode(e); err == nil {
			out = append(out, id)
			continue
		}
		infos, err := parsePeers([]string{e})
		if err != nil {
			return nil, fmt.Errorf("protected peer %q: want a peer ID or a multiaddr ending in /p2p/<peer ID>: %w", e, err)
		}
		out = append(out, infos[0].ID)
	}
	return out, nil
}
