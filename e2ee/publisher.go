package e2ee

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/tributary-iot/tributary/streamr"
)

// publisherState is a publisher's current group key per stream and the
// answer budgets per requester. Guarded by Exchange.mu.
type publisherState struct {
	ids      *streamr.GroupKeyIDs
	current  map[streamr.StreamID]*currentKey
	answers  map[string]*rate.Limiter // by requester hex
	seen     map[string]bool          // requests handled, by requester and request ID
	joinable map[streamr.StreamPartID]bool
}

type currentKey struct {
	key     streamr.GroupKey
	created time.Time
}

func (p *publisherState) init() {
	p.ids = streamr.NewGroupKeyIDs()
	p.current = make(map[streamr.StreamID]*currentKey)
	p.answers = make(map[string]*rate.Limiter)
	p.seen = make(map[string]bool)
	p.joinable = make(map[streamr.StreamPartID]bool)
}

// latestName records a stream's current key ID and creation time.
func latestName(stream streamr.StreamID) string { return "latest/" + string(stream) }

// Encrypt encrypts c in place with the stream's current group key, as
// the SDK's publisher does. The key is stored durably before it is first
// used. When RotateEvery has passed since the key was made, c also
// announces its successor (newGroupKey), which encrypts the next message.
// It reports whether part is new to the publisher (the caller then joins
// it to answer key requests).
func (x *Exchange) Encrypt(ctx context.Context, part streamr.StreamPartID, c *streamr.ContentMessage, now time.Time) (newPart bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	cur, err := x.currentKey(ctx, part.Stream, now)
	if err != nil {
		return false, err
	}
	var next *currentKey
	if x.cfg.RotateEvery > 0 && now.Sub(cur.created) >= x.cfg.RotateEvery {
		if next, err = x.newKey(ctx, part.Stream, now); err != nil {
			return false, err
		}
	}
	var nextKey *streamr.GroupKey
	if next != nil {
		nextKey = &next.key
	}
	if err := cur.key.EncryptContent(c, nextKey); err != nil {
		return false, err
	}
	if next != nil {
		x.pub.current[part.Stream] = next
		x.metrics.rotations.Inc()
	}
	x.metrics.encrypted.Inc()
	if !x.pub.joinable[part] {
		x.pub.joinable[part] = true
		newPart = true
	}
	return newPart, nil
}

// Rekey replaces a stream's group key at once, without announcing the new
// one in band: subscribers fetch it by key exchange, and ones no longer
// allowed cannot. The caller holds no lock.
func (x *Exchange) Rekey(ctx context.Context, stream streamr.StreamID) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	k, err := x.newKey(ctx, stream, time.Now())
	if err != nil {
		return "", err
	}
	x.pub.current[stream] = k
	x.metrics.rekeys.Inc()
	return k.key.ID, nil
}

// currentKey returns the stream's key: in memory, else the stored latest
// one (a restart keeps the key, as the SDK's latest-key store does), else
// a new one. x.mu is held.
func (x *Exchange) currentKey(ctx context.Context, stream streamr.StreamID, now time.Time) (*currentKey, error) {
	if k, ok := x.pub.current[stream]; ok {
		return k, nil
	}
	if k, ok, err := x.loadLatest(stream); err != nil || ok {
		if ok {
			x.pub.current[stream] = k
		}
		return k, err
	}
	k, err := x.newKey(ctx, stream, now)
	if err == nil {
		x.pub.current[stream] = k
	}
	return k, err
}

func (x *Exchange) loadLatest(stream streamr.StreamID) (*currentKey, bool, error) {
	v, ok, err := x.cfg.Secrets.Secret(latestName(stream))
	if err != nil || !ok {
		return nil, false, err
	}
	ms, id, found := strings.Cut(string(v), " ")
	created, perr := strconv.ParseInt(ms, 10, 64)
	if !found || perr != nil {
		return nil, false, fmt.Errorf("latest group key record of %s is malformed", stream)
	}
	key, ok, err := x.storedKey(x.self, id)
	if err != nil {
		return nil, false, err
	}
	if !ok {
		return nil, false, fmt.Errorf("latest group key %q of %s is not stored", id, stream)
	}
	return &currentKey{key: key, created: time.UnixMilli(created)}, true, nil
}

// newKey makes a group key for stream and stores it, and the stream's
// latest-key record, durably. x.mu is held.
func (x *Exchange) newKey(ctx context.Context, stream streamr.StreamID, now time.Time) (*currentKey, error) {
	k, err := streamr.NewGroupKey(x.pub.ids.Next())
	if err != nil {
		return nil, err
	}
	if err := x.cfg.Secrets.PutSecret(ctx, keyName(x.self, k.ID), k.Data); err != nil {
		return nil, fmt.Errorf("store group key of %s: %w", stream, err)
	}
	latest := strconv.FormatInt(now.UnixMilli(), 10) + " " + k.ID
	if err := x.cfg.Secrets.PutSecret(ctx, latestName(stream), []byte(latest)); err != nil {
		return nil, fmt.Errorf("store latest group key of %s: %w", stream, err)
	}
	return &currentKey{key: k, created: now}, nil
}

func (x *Exchange) storedKey(publisher []byte, id string) (streamr.GroupKey, bool, error) {
	data, ok, err := x.cfg.Secrets.Secret(keyName(publisher, id))
	if err != nil || !ok {
		return streamr.GroupKey{}, false, err
	}
	if len(data) != streamr.GroupKeyLen {
		return streamr.GroupKey{}, false, fmt.Errorf("stored group key %q is %d bytes", id, len(data))
	}
	return streamr.GroupKey{ID: id, Data: data}, true, nil
}

// answer handles a GroupKeyRequest addressed to us, or, as a key server,
// to the publisher of keys we hold in a partition we serve: the requester
// must be allowed to subscribe, within its rate, and asking for keys we
// hold. A key server signs its answer itself; readers take it because it
// may publish on the stream.
func (x *Exchange) answer(ctx context.Context, m *streamr.StreamMessage, req *streamr.GroupKeyRequest) {
	own := bytes.Equal(req.RecipientID, x.self)
	part := m.ID.StreamPart()
	requester := m.ID.PublisherID
	if !own && (!x.serves(part) || bytes.Equal(requester, x.self)) {
		return // for another publisher, or our own request as a key server
	}
	who := streamr.UserID(requester)
	if !x.firstSight(who, req.RequestID) {
		return // the same request again: a partition joined twice here, or a replay
	}
	if !x.answerAllowed(who) {
		x.metrics.requests.WithLabelValues("rate_limited").Inc()
		x.warn("rate_limited", "key requests over the rate limit dropped", "requester", who, "stream_part", part.String())
		return
	}
	if len(req.GroupKeyIDs) > x.cfg.MaxKeysPerRequest {
		x.metrics.requests.WithLabelValues("too_many_keys").Inc()
		x.warn("too_many_keys", "key request refused: too many group key IDs", "requester", who, "keys", len(req.GroupKeyIDs), "max", x.cfg.MaxKeysPerRequest)
		return
	}
	if ok, err := x.requesterAllowed(ctx, own, part.Stream, requester); !ok {
		x.metrics.requests.WithLabelValues("refused").Inc()
		x.warn("refused", "key request refused: requester may not subscribe", "requester", who, "stream", string(part.Stream),
			"recipient", streamr.UserID(req.RecipientID), "err", err)
		return
	}
	resp, err := x.response(req, part.Stream, own)
	if err != nil {
		x.metrics.requests.WithLabelValues("invalid").Inc()
		x.warn("invalid", "key request not answered", "requester", who, "err", err)
		return
	}
	if len(resp.GroupKeys) == 0 {
		x.metrics.requests.WithLabelValues("no_keys").Inc()
		return
	}
	resp.RecipientID = requester
	if err := x.publish(ctx, part, resp); err != nil {
		x.metrics.requests.WithLabelValues("publish_failed").Inc()
		x.warn("publish_failed", "key response not sent", "requester", who, "err", err)
		return
	}
	x.metrics.requests.WithLabelValues("answered").Inc()
	x.log.Debug("group keys sent", "requester", who, "stream_part", part.String(), "keys", len(resp.GroupKeys), "key_server", !own)
}

func (x *Exchange) answerAllowed(who string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	l, ok := x.pub.answers[who]
	if !ok {
		if len(x.pub.answers) >= maxTrackedRequesters {
			clear(x.pub.answers) // forget budgets rather than grow without bound
		}
		l = rate.NewLimiter(rate.Limit(x.cfg.MaxAnswersPerSec), max(1, int(x.cfg.MaxAnswersPerSec)))
		x.pub.answers[who] = l
	}
	return l.Allow()
}

// firstSight reports whether a request is new: a gateway that both
// subscribes to a partition and answers there hears each message twice.
func (x *Exchange) firstSight(who, requestID string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := who + "/" + requestID
	if x.pub.seen[key] {
		return false
	}
	if len(x.pub.seen) >= maxTrackedRequests {
		clear(x.pub.seen) // a replay after this is answered again, within its budget
	}
	x.pub.seen[key] = true
	return true
}

// maxTrackedRequests bounds the memory of requests handled.
const maxTrackedRequests = 10000

// maxTrackedRequesters bounds the per-requester answer budgets.
const maxTrackedRequesters = 10000

// requesterAllowed asks the publisher's Subscribers, or a key server's
// KeyRequesters, whether user may subscribe to stream.
func (x *Exchange) requesterAllowed(ctx context.Context, own bool, stream streamr.StreamID, user []byte) (bool, error) {
	perms := x.cfg.Subscribers
	if !own {
		perms = x.cfg.KeyRequesters
	}
	if perms == nil {
		return false, nil
	}
	return perms.Allowed(ctx, string(stream), user, streamr.PermissionSubscribe, time.Now())
}

// response encrypts the requested keys we hold for the request's public
// key: our own, or as a key server the recipient's keys seen on stream.
func (x *Exchange) response(req *streamr.GroupKeyRequest, stream streamr.StreamID, own bool) (*streamr.GroupKeyResponse, error) {
	resp := &streamr.GroupKeyResponse{RequestID: req.RequestID, EncryptionType: req.EncryptionType}
	for _, id := range req.GroupKeyIDs {
		k, ok, err := x.storedKey(x.self, id)
		if !own {
			k, ok, err = x.servedKey(stream, req.RecipientID, id)
		}
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		data, err := streamr.EncryptForPublicKey(req.EncryptionType, req.PublicKey, k.Data)
		if err != nil {
			return nil, err
		}
		resp.GroupKeys = append(resp.GroupKeys, streamr.EncryptedGroupKey{ID: id, Data: data})
	}
	return resp, nil
}

// Subscribers is the static Permissions of rules' subscribers lists:
// stream ID → allowed user IDs. Only PermissionSubscribe is granted.
type Subscribers map[string][][]byte

// Allowed implements Permissions.
func (s Subscribers) Allowed(_ context.Context, streamID string, user []byte, p streamr.Permission, _ time.Time) (bool, error) {
	if p != streamr.PermissionSubscribe {
		return false, nil
	}
	for _, u := range s[streamID] {
		if bytes.Equal(u, user) {
			return true, nil
		}
	}
	return false, nil
}

// ParseUserID reads "0x" + hex of a 20-byte address or a 33/65-byte P-256
// key, as in subscribers lists.
func ParseUserID(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil || (len(b) != 20 && len(b) != 33 && len(b) != 65) {
		return nil, fmt.Errorf("%q is not a 20-byte address or a 33/65-byte P-256 key in hex", s)
	}
	return b, nil
}
