package overlay

import (
	"crypto/sha256"

	pb "github.com/libp2p/go-libp2p-pubsub/pb"
)

// gossipIDLen: a truncated SHA-256 keeps the seen cache small and
// IHAVE/IWANT gossip short, yet collisions stay negligible (2^-80 per
// pair).
const gossipIDLen = 20

// gossipID is the GossipSub message ID: a hash of the whole encoded
// bundle (bundle.go). pubsub marks an ID as seen before validating the message, and
// remembers a rejected ID as invalid: if the ID covered only the Streamr
// message ID and signature, a stranger sending a copy with altered
// content first would have the genuine message dropped as a duplicate of
// a rejected one, and its honest forwarders penalised for it. Covering
// every byte, a forgery gets an ID of its own, and only its sender pays.
// A copy re-encoded with a valid signature (unknown fields added), or
// repacked into another bundle, is caught by the partition's recent IDs
// (by Streamr message ID) or else by the bridge's ordering (by chain
// position).
func gossipID(m *pb.Message) string {
	sum := sha256.Sum256(m.GetData())
	return string(sum[:gossipIDLen])
}
