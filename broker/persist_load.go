package broker

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Loading: mochi's Serve calls StoredClients, StoredSubscriptions, StoredInflightMessages and
// StoredRetainedMessages once, in that order (server.go:1555), before any client connects.
// Records of sessions that expired while the gateway was down are deleted instead of loaded.

// loadRecords decodes the JSON record R of every key under prefix; keep
// turns each into what is loaded (false: skip it). what names the records
// in errors.
func loadRecords[R, T any](h *sessions, prefix, what string, keep func(key string, rec *R) (T, bool, error)) ([]T, error) {
	if h.commit.store == nil {
		return nil, nil
	}
	var out []T
	err := h.commit.store.ScanSessions(prefix, func(key string, v []byte) error {
		var rec R
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %q: %w", key, err)
		}
		t, ok, err := keep(key, &rec)
		if ok {
			out = append(out, t)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load MQTT %s: %w", what, err)
	}
	return out, nil
}

// StoredClients implements mqtt.Hook: the persistent sessions that have not expired.
func (h *sessions) StoredClients() ([]storage.Client, error) {
	now := time.Now().Unix()
	return loadRecords(h, prefixClient, "sessions", func(key string, rec *clientRecord) (storage.Client, bool, error) {
		if rec.Disconnected > 0 && rec.Disconnected+h.expiry(rec.Client) < now {
			h.commit.put(key, nil) // its other records go as orphans below
			return storage.Client{}, false, nil
		}
		h.mu.Lock()
		ss := h.sessionFor(rec.ID)
		ss.persistent, ss.stored = true, true
		h.mu.Unlock()
		return rec.Client, true, nil
	})
}

// expiry is how long a disconnected session is kept (mochi's rule, server.go:1704).
func (h *sessions) expiry(c storage.Client) int64 {
	limit := int64(h.srv.Options.Capabilities.MaximumSessionExpiryInterval)
	if c.ProtocolVersion == 5 && c.Properties.SessionExpiryIntervalFlag {
		return min(int64(c.Properties.SessionExpiryInterval), limit)
	}
	return limit
}

// known reports whether id is a loaded session; records of other IDs are deleted.
func (h *sessions) known(key, id string) bool {
	h.mu.Lock()
	s := h.byID[id]
	h.mu.Unlock()
	if s == nil {
		h.commit.put(key, nil)
	}
	return s != nil
}

// StoredSubscriptions implements mqtt.Hook.
func (h *sessions) StoredSubscriptions() ([]storage.Subscription, error) {
	return loadRecords(h, prefixSub, "subscriptions", func(key string, rec *storage.Subscription) (storage.Subscription, bool, error) {
		if !h.known(key, rec.Client) {
			return storage.Subscription{}, false, nil
		}
		h.mu.Lock()
		h.byID[rec.Client].subs[rec.Filter] = struct{}{}
		h.mu.Unlock()
		return *rec, true, nil
	})
}

// StoredInflightMessages implements mqtt.Hook: every queued and in-flight message, indexed in
// queueing order (their keys' order).
func (h *sessions) StoredInflightMessages() ([]storage.Message, error) {
	return loadRecords(h, prefixQueued, "queued messages", func(key string, rec *storage.Message) (storage.Message, bool, error) {
		id, seq, err := parseQueuedKey(key)
		if err != nil || !h.known(key, id) {
			return storage.Message{}, false, err
		}
		h.mu.Lock()
		s := h.byID[id]
		if s.msgs[rec.PacketID] == nil {
			m := &queuedMsg{client: id, seq: seq, pid: rec.PacketID, size: int64(len(rec.TopicName) + len(rec.Payload)), stored: true}
			h.track(s, m)
			h.nextSeq = max(h.nextSeq, seq+1)
		}
		h.mu.Unlock()
		rec.Client = id
		return *rec, true, nil
	})
}

// StoredRetainedMessages implements mqtt.Hook.
func (h *sessions) StoredRetainedMessages() ([]storage.Message, error) {
	return loadRecords(h, prefixRetain, "retained messages", func(key string, rec *storage.Message) (storage.Message, bool, error) {
		rec.TopicName = strings.TrimPrefix(key, prefixRetain)
		return *rec, true, nil
	})
}

// sortPackets orders a session's messages by queueing order; unindexed ones go last.
func sortPackets(pks []packets.Packet, seq func(uint16) uint64) {
	key := func(pk packets.Packet) uint64 {
		if n := seq(pk.PacketID); n != 0 {
			return n
		}
		return math.MaxUint64
	}
	slices.SortStableFunc(pks, func(a, b packets.Packet) int {
		ka, kb := key(a), key(b)
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
}
