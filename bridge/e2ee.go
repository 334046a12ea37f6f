package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// Encryptor encrypts a reading's content before it is signed (issue 18);
// e2ee.Exchange satisfies it. newPart reports a stream partition it has
// not encrypted for before: the gateway then listens there for key
// requests.
type Encryptor interface {
	Encrypt(ctx context.Context, part streamr.StreamPartID, c *streamr.ContentMessage, now time.Time) (newPart bool, err error)
}

// Publicity says whether a stream is public (anyone may subscribe), for
// rules with encryption = "auto"; the StreamRegistry client answers it.
type Publicity interface {
	IsPublic(ctx context.Context, stream streamr.StreamID) (bool, error)
}

// KeyExchange is the subscriber side of end-to-end encryption as the
// Deliverer uses it; e2ee.Exchange satisfies it.
type KeyExchange interface {
	// HandleMessage takes key exchange messages (false for others).
	HandleMessage(ctx context.Context, m *streamr.StreamMessage) bool
	// Attach gives the exchange a partition's topic to send requests on.
	Attach(part streamr.StreamPartID, t interface {
		Publish(ctx context.Context, encoded [][]byte) (int, error)
	})
	// Await calls then with m decrypted, once its key is at hand, or with
	// an error when it cannot be had in time.
	Await(ctx context.Context, m *streamr.StreamMessage, then func(*streamr.StreamMessage, error))
	// DecryptWait decrypts m, waiting a bounded time for its key.
	DecryptWait(ctx context.Context, m *streamr.StreamMessage) (*streamr.StreamMessage, error)
}

// encrypt decides a reading's encryption at ingest: "always" rules, and
// "auto" rules for streams that are not public. Without a Publicity,
// "auto" means never; if the registry cannot tell, the reading is
// encrypted (a private stream must never go out in clear).
func (p *Pipeline) encrypt(m Mapped) bool {
	if m.Encrypt || !m.Auto || p.cfg.Publicity == nil {
		return m.Encrypt
	}
	public, err := p.cfg.Publicity.IsPublic(context.Background(), m.Part.Stream)
	if err != nil {
		p.log.Warn("stream publicity unknown: encrypting", "stream", string(m.Part.Stream), "err", err)
		return true
	}
	return !public
}

// encryptContent encrypts a message body for a reading that asks for it.
func (s *signer) encryptContent(ctx context.Context, r *streamr.StreamMessage) error {
	p := s.p
	if p.cfg.Encryptor == nil {
		return errEncryptorMissing
	}
	part := r.ID.StreamPart()
	newPart, err := p.cfg.Encryptor.Encrypt(ctx, part, r.Content(), p.cfg.Clock.Now())
	if err != nil {
		return err
	}
	if newPart && p.cfg.EncryptedPart != nil {
		p.cfg.EncryptedPart(part)
	}
	return nil
}

type encryptorError string

func (e encryptorError) Error() string { return string(e) }

const errEncryptorMissing = encryptorError("a rule encrypts but the pipeline has no Encryptor")

// Subscribers returns the rule's subscribers list.
func (r *Rule) Subscribers() []string { return r.cfg.Subscribers }

// StreamPattern returns a regular expression matching every stream ID the
// rule can produce for the gateway whose publisher ID is address:
// captures match one topic level, {topic} any topic.
func (r *Rule) StreamPattern(address string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, p := range r.stream {
		switch {
		case p.literal != "":
			b.WriteString(regexp.QuoteMeta(p.literal))
		case p.ref == "address":
			b.WriteString(regexp.QuoteMeta(address))
		case p.ref == "topic":
			b.WriteString(".+")
		default:
			b.WriteString("[^/]*")
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// serveRekey answers POST /streams/{id}/rekey. Only loopback clients may
// re-key: the API has no authentication, and an allow_anonymous listener
// must not let the LAN rotate keys.
func serveRekey(w http.ResponseWriter, r *http.Request, rekey func(context.Context, string) (string, error)) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		writeJSONError(w, http.StatusForbidden, "re-key is allowed from loopback only")
		return
	}
	id, err := rekey(r.Context(), r.PathValue("id"))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"stream": r.PathValue("id"), "groupKeyId": id})
}

// Decrypter decrypts stored messages for JSON consumers (resends, the
// app interfaces' WebSocket subscribers); e2ee.Exchange satisfies it.
type Decrypter interface {
	// Decrypt decrypts m if its key is at hand (ok false: it is not).
	Decrypt(ctx context.Context, m *streamr.StreamMessage) (out *streamr.StreamMessage, ok bool, err error)
	// DecryptWait decrypts m, requesting a missing key and waiting a
	// bounded time for it.
	DecryptWait(ctx context.Context, m *streamr.StreamMessage) (*streamr.StreamMessage, error)
}

// ErrUndecrypted means an encrypted message cannot be given to a JSON
// consumer: its key is not held (or the gateway has no key exchange).
var ErrUndecrypted = errors.New("encrypted message: group key not held")

// maxMissedKeys bounds a Plaintext's memory of keys it waited for in vain.
const maxMissedKeys = 1024

// Plaintext decrypts the messages of one answer or connection through the
// gateway's key exchange. A missing key is requested and waited for once
// (bounded, like the Deliverer's history); later messages under a key
// that did not come are decrypted only if it has arrived since, so one
// refused reader waits once per key, not once per message.
type Plaintext struct {
	keys   Decrypter // nil: encrypted messages are not decrypted
	missed map[string]bool
}

// NewPlaintext returns a Plaintext over keys (nil: none).
func NewPlaintext(keys Decrypter) *Plaintext {
	return &Plaintext{keys: keys, missed: make(map[string]bool)}
}

// Decrypt returns m with its content decrypted; messages without
// encrypted content come back as they are. An error wraps ErrUndecrypted,
// or is ctx's.
func (p *Plaintext) Decrypt(ctx context.Context, m *streamr.StreamMessage) (*streamr.StreamMessage, error) {
	c := m.Content()
	if c == nil || c.EncryptionType == streamr.EncryptionNone {
		return m, nil
	}
	if p == nil || p.keys == nil || c.GroupKeyID == nil {
		return nil, ErrUndecrypted
	}
	key := m.ID.PublisherHex() + "/" + *c.GroupKeyID
	if p.missed[key] {
		out, ok, err := p.keys.Decrypt(ctx, m)
		if err != nil || !ok {
			return nil, errors.Join(ErrUndecrypted, err)
		}
		delete(p.missed, key)
		return out, nil
	}
	out, err := p.keys.DecryptWait(ctx, m)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if len(p.missed) >= maxMissedKeys {
			clear(p.missed)
		}
		p.missed[key] = true
		return nil, errors.Join(ErrUndecrypted, err)
	}
	return out, nil
}
