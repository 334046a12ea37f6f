package streamr

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// GroupKey is an AES-256 key that encrypts a publisher's content (spec §5).
// Its ID travels in clear in every message it encrypts (groupKeyId).
type GroupKey struct {
	ID   string
	Data []byte // GroupKeyLen bytes
}

// GroupKeyIDs names group keys the way the SDK does (uuid('GroupKey')): a
// UUIDv4 chosen once per generator, then "-GroupKey" and a counter from 1.
type GroupKeyIDs struct {
	prefix string
	n      atomic.Uint64
}

// NewGroupKeyIDs returns a generator with a fresh UUID.
func NewGroupKeyIDs() *GroupKeyIDs {
	return &GroupKeyIDs{prefix: NewUUID() + "-GroupKey"}
}

// Next returns a new group key ID.
func (g *GroupKeyIDs) Next() string {
	return g.prefix + strconv.FormatUint(g.n.Add(1), 10)
}

// NewUUID returns a random RFC 4122 version 4 UUID in its canonical form,
// as the SDK's uuidv4 (request IDs, group key IDs).
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexDigits = "0123456789abcdef"
	var out strings.Builder
	out.Grow(36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out.WriteByte('-')
		}
		out.WriteByte(hexDigits[c>>4])
		out.WriteByte(hexDigits[c&0xf])
	}
	return out.String()
}

// NewGroupKey returns a group key with the given ID and fresh random bytes.
func NewGroupKey(id string) (GroupKey, error) {
	if err := checkGroupKeyID(id); err != nil {
		return GroupKey{}, err
	}
	k := GroupKey{ID: id, Data: make([]byte, GroupKeyLen)}
	_, _ = rand.Read(k.Data)
	return k, nil
}

// MaxGroupKeyIDLen bounds group key IDs read from the network; the SDK's
// are 46 bytes.
const MaxGroupKeyIDLen = 256

// checkGroupKeyID applies the SDK's GroupKey checks (non-empty, not a PEM
// key by mistake) plus a length bound.
func checkGroupKeyID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("group key ID is empty")
	case len(id) > MaxGroupKeyIDLen:
		return fmt.Errorf("group key ID is %d bytes, more than %d", len(id), MaxGroupKeyIDLen)
	case strings.Contains(id, "---BEGIN"):
		return fmt.Errorf("group key ID %.20q… is a PEM key, not a group key ID", id)
	}
	return nil
}

// EncryptNext encrypts next with k for an in-band rotation: the message
// encrypted with k carries it as newGroupKey (IV ‖ AES-256-CTR(k, next), 48
// bytes), as the SDK's GroupKey.encryptNextGroupKey.
func (k GroupKey) EncryptNext(next GroupKey) (EncryptedGroupKey, error) {
	data, err := EncryptAES(k.Data, next.Data)
	if err != nil {
		return EncryptedGroupKey{}, fmt.Errorf("encrypt next group key %q: %w", next.ID, err)
	}
	return EncryptedGroupKey{ID: next.ID, Data: data}, nil
}

// DecryptNext reverses EncryptNext and checks the result is a group key.
func (k GroupKey) DecryptNext(e EncryptedGroupKey) (GroupKey, error) {
	if err := checkGroupKeyID(e.ID); err != nil {
		return GroupKey{}, fmt.Errorf("newGroupKey: %w", err)
	}
	data, err := DecryptAES(k.Data, e.Data)
	if err != nil {
		return GroupKey{}, fmt.Errorf("newGroupKey %q: %w", e.ID, err)
	}
	if len(data) != GroupKeyLen {
		return GroupKey{}, fmt.Errorf("newGroupKey %q is %d bytes, want %d", e.ID, len(data), GroupKeyLen)
	}
	return GroupKey{ID: e.ID, Data: data}, nil
}

// EncryptContent encrypts c's content in place with k: the content becomes
// IV ‖ ciphertext, encryptionType AES and groupKeyId k.ID. If next is not
// nil, c also announces it as newGroupKey (rotation).
func (k GroupKey) EncryptContent(c *ContentMessage, next *GroupKey) error {
	if c.EncryptionType != EncryptionNone {
		return fmt.Errorf("content is already encrypted")
	}
	ct, err := EncryptAES(k.Data, c.Content)
	if err != nil {
		return fmt.Errorf("encrypt content with group key %q: %w", k.ID, err)
	}
	if next != nil {
		e, err := k.EncryptNext(*next)
		if err != nil {
			return err
		}
		c.NewGroupKey = &e
	}
	id := k.ID
	c.Content, c.EncryptionType, c.GroupKeyID = ct, EncryptionAES, &id
	return nil
}

// DecryptContent returns a copy of c decrypted with k, and the next group
// key if c announces one.
func (k GroupKey) DecryptContent(c *ContentMessage) (*ContentMessage, *GroupKey, error) {
	if c.EncryptionType != EncryptionAES || c.GroupKeyID == nil {
		return nil, nil, fmt.Errorf("content is not AES-encrypted")
	}
	if *c.GroupKeyID != k.ID {
		return nil, nil, fmt.Errorf("content is encrypted with group key %q, not %q", *c.GroupKeyID, k.ID)
	}
	plain, err := DecryptAES(k.Data, c.Content)
	if err != nil {
		return nil, nil, fmt.Errorf("decrypt content with group key %q: %w", k.ID, err)
	}
	out := &ContentMessage{Content: plain, ContentType: c.ContentType, EncryptionType: EncryptionNone}
	if c.NewGroupKey == nil {
		return out, nil, nil
	}
	next, err := k.DecryptNext(*c.NewGroupKey)
	if err != nil {
		return nil, nil, err
	}
	return out, &next, nil
}
