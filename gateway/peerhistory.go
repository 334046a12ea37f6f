package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// peerHistory is the history the HTTP API's resends read: this
// gateway's store, and when that holds no content message of the range
// asked for, the overlay's nodes that store the partition ([[store]] peers, the
// publisher), as a Streamr node's resends go to the stream's storage
// nodes. A reader that joins after the publisher went offline thus gets
// the history — and with a key server among those nodes, its keys.
// Peers' messages are validated as gossip is (signature, publisher
// policy) by the overlay.
type peerHistory struct {
	*storage.Store                 // also the PartLister of GET /streams
	peers          bridge.Resender // the overlay node
}

// peerHistoryPage and peerHistoryTimeout bound one query to the peers.
const (
	peerHistoryPage    = 500
	peerHistoryTimeout = time.Minute
)

// Messages implements bridge.History.
func (h peerHistory) Messages(part streamr.StreamPartID, from, to int64, fn func(encoded []byte) error) error {
	held, err := h.holdsContent(part, from, to)
	if err != nil {
		return err
	}
	if held {
		return h.Store.Messages(part, from, to, fn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), peerHistoryTimeout)
	defer cancel()
	return h.fromPeers(ctx, part, from, to, fn)
}

// errFound ends a scan at the first message it looks for.
var errFound = errors.New("found")

// holdsContent reports whether the store has a content message of part
// in the range: key exchange messages a subscriber overheard do not make
// it the holder of a stream's history.
func (h peerHistory) holdsContent(part streamr.StreamPartID, from, to int64) (bool, error) {
	err := h.Store.Messages(part, from, to, func(encoded []byte) error {
		m, err := streamr.Unmarshal(encoded)
		if err == nil && m.Content() != nil {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

// fromPeers pages through the peers' answers in stream order. A page
// starts at the last message of the one before (bounds are inclusive),
// leaving out what was already passed on at that position.
func (h peerHistory) fromPeers(ctx context.Context, part streamr.StreamPartID, from, to int64, fn func(encoded []byte) error) error {
	q := streamr.ResendQuery{
		Part: part, From: streamr.MessageRef{Timestamp: from},
		To: streamr.MessageRef{Timestamp: to, SequenceNumber: streamr.MaxRef.SequenceNumber}, Limit: peerHistoryPage,
	}
	var edge streamr.MessageRef
	seen := map[string]bool{} // messages at edge already passed on
	for page := 0; ; page++ {
		msgs, err := h.peers.Resend(ctx, q)
		switch {
		case err != nil && page == 0:
			return nil // no peer holds any: the answer is empty, as before
		case err != nil:
			return fmt.Errorf("resend %s from peers, page %d: %w", part, page+1, err)
		}
		fresh := 0
		for _, e := range msgs {
			ref, id := e.Msg.ID.Ref(), messageKey(e.Msg)
			if ref == edge && seen[id] {
				continue
			}
			if ref != edge {
				edge, seen = ref, map[string]bool{}
			}
			seen[id] = true
			fresh++
			if err := fn(e.Encoded); err != nil {
				return err
			}
		}
		if fresh == 0 || len(msgs) < peerHistoryPage {
			return nil
		}
		q.From = edge
	}
}

// messageKey tells apart messages that share a position in the stream.
func messageKey(m *streamr.StreamMessage) string {
	return fmt.Sprintf("%x/%s", m.ID.PublisherID, m.ID.MsgChainID)
}
