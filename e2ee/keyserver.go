package e2ee

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// PublishPolicy says whether a user may publish on a stream at a time:
// the overlay's publisher policy (allow list or StreamRegistry). A
// subscriber takes a key response from a key server only if this policy
// lets the server publish on the stream, as the SDK validates group key
// messages (streamr-protocol.md §2.4).
type PublishPolicy interface {
	MayPublishAt(ctx context.Context, stream streamr.StreamID, user []byte, at time.Time) (bool, error)
}

// keyServerState is what a key server knows beyond a subscriber: the
// partitions it serves and which stored keys belong to which stream.
// Guarded by Exchange.mu.
type keyServerState struct {
	parts map[streamr.StreamPartID]bool
	bound map[string]bool // boundName → recorded durably
}

func (k *keyServerState) init(parts []streamr.StreamPartID) {
	k.parts = make(map[streamr.StreamPartID]bool, len(parts))
	for _, p := range parts {
		k.parts[p] = true
	}
	k.bound = make(map[string]bool)
}

// boundName records that a publisher's key encrypted messages of stream:
// a key server hands a key only to requesters allowed on a stream the
// key was seen on. The ID's length keeps the name unambiguous (IDs come
// from the wire and may hold any character).
func boundName(stream streamr.StreamID, publisher []byte, id string) string {
	return fmt.Sprintf("ks/%s/%d/%s/%s", hex.EncodeToString(publisher), len(id), id, stream)
}

func (x *Exchange) serves(part streamr.StreamPartID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.ks.parts[part]
}

// Collect takes a message this gateway stored in a partition it serves
// keys for (a [[store]] with answer_key_requests): the group key of an
// encrypted message is requested from its publisher unless held, kept
// durably, and the rotation a message announces is followed, so that
// readers can have the keys from here while the publisher is offline.
// It blocks no longer than a request takes to send.
func (x *Exchange) Collect(ctx context.Context, m *streamr.StreamMessage) {
	c := m.Content()
	part := m.ID.StreamPart()
	if c == nil || c.EncryptionType == streamr.EncryptionNone || c.GroupKeyID == nil || !x.serves(part) {
		return
	}
	ids := []string{*c.GroupKeyID}
	if c.NewGroupKey != nil {
		ids = append(ids, c.NewGroupKey.ID)
	}
	for _, id := range ids {
		if err := x.bind(ctx, part.Stream, m.ID.PublisherID, id); err != nil {
			x.warn("collect_failed", "group key of a stored message not recorded", "stream_part", part.String(), "err", err)
			return
		}
	}
	x.mu.Lock()
	_, held, err := x.knownKey(m.ID.PublisherID, *c.GroupKeyID)
	_, asked := x.sub.pending[keyName(m.ID.PublisherID, *c.GroupKeyID)]
	x.mu.Unlock()
	if err == nil && (held || asked) && c.NewGroupKey == nil {
		return // nothing to learn from this message, or already asked for
	}
	// Decrypting stores the announced key (decryptWith); a missing key is
	// requested and the message parked until it comes, bounded as any.
	x.Await(ctx, m, func(_ *streamr.StreamMessage, err error) {
		if err != nil {
			x.metrics.collected.WithLabelValues("failed").Inc()
			x.warn("collect_failed", "group key of a stored message not obtained: readers cannot get it here",
				"stream_part", part.String(), "publisher", m.ID.PublisherHex(), "err", err)
			return
		}
		x.metrics.collected.WithLabelValues("ok").Inc()
	})
}

// bind records durably, once, that a key of publisher encrypts stream.
func (x *Exchange) bind(ctx context.Context, stream streamr.StreamID, publisher []byte, id string) error {
	name := boundName(stream, publisher, id)
	x.mu.Lock()
	done := x.ks.bound[name]
	x.mu.Unlock()
	if done {
		return nil
	}
	if err := x.cfg.Secrets.PutSecret(ctx, name, nil); err != nil {
		return fmt.Errorf("record group key of %s: %w", stream, err)
	}
	x.mu.Lock()
	if len(x.ks.bound) >= maxBoundCached {
		clear(x.ks.bound) // a cache of what is stored: forgetting costs a rewrite
	}
	x.ks.bound[name] = true
	x.mu.Unlock()
	return nil
}

// maxBoundCached bounds the memory of recorded key bindings.
const maxBoundCached = 100000

// servedKey returns a key this key server holds of publisher for stream.
func (x *Exchange) servedKey(stream streamr.StreamID, publisher []byte, id string) (streamr.GroupKey, bool, error) {
	if _, ok, err := x.cfg.Secrets.Secret(boundName(stream, publisher, id)); err != nil || !ok {
		return streamr.GroupKey{}, false, err
	}
	return x.storedKey(publisher, id)
}

// keyServerAllowed reports whether the signer of a key response, not the
// publisher asked, may answer for it: it may publish on the stream.
func (x *Exchange) keyServerAllowed(ctx context.Context, m *streamr.StreamMessage) (bool, error) {
	if x.cfg.KeyServers == nil {
		return false, nil
	}
	return x.cfg.KeyServers.MayPublishAt(ctx, m.ID.StreamID, m.ID.PublisherID, time.UnixMilli(m.ID.Timestamp))
}
