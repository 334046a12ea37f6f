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

// StoredClients implements mqtt.Hook: the persistent sessions that have not expired.
func (h *sessions) StoredClients() ([]storage.Client, error) {
	if h.commit.store == nil {
		return nil, nil
	}
	now := time.Now().Unix()
	var out []storage.Client
	err := h.commit.store.ScanSessions(prefixClient, func(key string, v []byte) error {
		var rec clientRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %q: %w", key, err)
		}
		if rec.Disconnected > 0 && rec.Disconnected+h.expiry(rec.Client) < now {
			h.commit.put(key, nil) // its other records go as orphans below
			return nil
		}
		h.mu.Lock()
		ss := h.sessionFor(rec.ID)
		ss.persistent, ss.stored = true, true
		h.mu.Unlock()
		out = append(out, rec.Client)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load MQTT sessions: %w", err)
	}
	return out, nil
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
	if h.commit.store == nil {
		return nil, nil
	}
	var out []storage.Subscription
	err := h.commit.store.ScanSessions(prefixSub, func(key string, v []byte) error {
		var rec storage.Subscription
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %q: %w", key, err)
		}
		if !h.known(key, rec.Client) {
			return nil
		}
		h.mu.Lock()
		h.byID[rec.Client].subs[rec.Filter] = struct{}{}
		h.mu.Unlock()
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load MQTT subscriptions: %w", err)
	}
	return out, nil
}

// StoredInflightMessages implements mqtt.Hook: every queued and in-flight message, indexed in
// queueing order (their keys' order).
func (h *sessions) StoredInflightMessages() ([]storage.Message, error) {
	if h.commit.store == nil {
		return nil, nil
	}
	var out []storage.Message
	err := h.commit.store.ScanSessions(prefixQueued, func(key string, v []byte) error {
		id, seq, err := parseQueuedKey(key)
		if err != nil {
			return err
		}
		var rec storage.Message
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %q: %w", key, err)
		}
		if !h.known(key, id) {
			return nil
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
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load MQTT queued messages: %w", err)
	}
	return out, nil
}

// StoredRetainedMessages implements mqtt.Hook.
func (h *sessions) StoredRetainedMessages() ([]storage.Message, error) {
	if h.commit.store == nil {
		return nil, nil
	}
	var out []storage.Message
	err := h.commit.store.ScanSessions(prefixRetain, func(key string, v []byte) error {
		var rec storage.Message
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode %q: %w", key, err)
		}
		rec.TopicName = strings.TrimPrefix(key, prefixRetain)
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load MQTT retained messages: %w", err)
	}
	return out, nil
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
