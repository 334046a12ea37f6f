package overlay

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// Policy decides who may publish on a stream. Every node of a stream
// partition's overlay must apply the same policy for that stream: a node
// that forwards a message its neighbour's policy refuses is penalised.
type Policy interface {
	MayPublish(stream streamr.StreamID, publisher []byte) bool
}

// TimedPolicy is a Policy that judges a publisher at the message's time
// and may be unable to answer: the on-chain StreamRegistry. The validator
// asks it only for messages whose signature verifies (a forged publisher
// ID costs no look-up), and instead of MayPublish. An error means it could
// not decide and refuses for now: the message is dropped without
// penalising the peer that relayed it.
type TimedPolicy interface {
	Policy
	MayPublishAt(ctx context.Context, stream streamr.StreamID, publisher []byte, at time.Time) (bool, error)
}

// AllowList is the default Policy until the on-chain StreamRegistry is
// consulted: the owner address of a 0x<address>/… stream may publish, and
// so may the publisher IDs listed for the stream. ENS-named streams have no
// implicit owner here, so they need a list.
type AllowList map[streamr.StreamID][][]byte

// MayPublish implements Policy.
func (a AllowList) MayPublish(stream streamr.StreamID, publisher []byte) bool {
	if owner, ok := stream.OwnerAddress(); ok && bytes.Equal(owner[:], publisher) {
		return true
	}
	for _, p := range a[stream] {
		if bytes.Equal(p, publisher) {
			return true
		}
	}
	return false
}

// ParseAllowList builds an AllowList from config text: stream IDs mapped to
// publisher IDs in hex ("0x" + 40 hex digits for an EVM address, 66 for a
// compressed P-256 key).
func ParseAllowList(m map[string][]string) (AllowList, error) {
	out := make(AllowList, len(m))
	for s, pubs := range m {
		id, err := streamr.ParseStreamID(s)
		if err != nil {
			return nil, fmt.Errorf("publisher allow-list: %w", err)
		}
		for _, p := range pubs {
			b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(p, "0x"), "0X"))
			if err != nil || (len(b) != 20 && len(b) != 33 && len(b) != 65) {
				return nil, fmt.Errorf("publisher allow-list for %s: %q is not a 20-byte address or a 33/65-byte P-256 key in hex", s, p)
			}
			out[id] = append(out[id], b)
		}
	}
	return out, nil
}
