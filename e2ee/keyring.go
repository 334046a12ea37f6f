package e2ee

import (
	"fmt"

	"github.com/tributary-iot/tributary/streamr"
)

// Keyring decrypts with stored group keys alone, without key exchange
// (`bridge export --decrypt`): this gateway's own keys and those it
// received. Rotations announced in the messages it reads are followed.
type Keyring struct {
	secrets Secrets
	keys    map[string]streamr.GroupKey // by keyName
}

// NewKeyring reads keys from s.
func NewKeyring(s Secrets) *Keyring {
	return &Keyring{secrets: s, keys: make(map[string]streamr.GroupKey)}
}

// Decrypt returns m with its content decrypted, m itself if it is not
// encrypted, or an error wrapping ErrNoKey if its key is not held.
func (k *Keyring) Decrypt(m *streamr.StreamMessage) (*streamr.StreamMessage, error) {
	c := m.Content()
	if c == nil || c.EncryptionType == streamr.EncryptionNone {
		return m, nil
	}
	if c.GroupKeyID == nil {
		return nil, fmt.Errorf("message %s: AES content without a group key ID", m.ID.Ref())
	}
	key, err := k.key(m.ID.PublisherID, *c.GroupKeyID)
	if err != nil {
		return nil, err
	}
	plain, next, err := key.DecryptContent(c)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", m.ID.Ref(), err)
	}
	if next != nil {
		k.keys[keyName(m.ID.PublisherID, next.ID)] = *next
	}
	out := *m
	out.Body = plain
	return &out, nil
}

func (k *Keyring) key(publisher []byte, id string) (streamr.GroupKey, error) {
	name := keyName(publisher, id)
	if key, ok := k.keys[name]; ok {
		return key, nil
	}
	data, ok, err := k.secrets.Secret(name)
	switch {
	case err != nil:
		return streamr.GroupKey{}, err
	case !ok || len(data) != streamr.GroupKeyLen:
		return streamr.GroupKey{}, fmt.Errorf("%w: %q of %s is not stored here", ErrNoKey, id, streamr.UserID(publisher))
	}
	key := streamr.GroupKey{ID: id, Data: data}
	k.keys[name] = key
	return key, nil
}
