//go:build pkcs11 && cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/ethereum/go-ethereum/crypto"
	p11 "github.com/miekg/pkcs11"

	"github.com/tributary-iot/tributary/streamr"
)

// Curve OIDs as DER, the CKA_EC_PARAMS of each key type.
var (
	oidSecp256k1 = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a}
	oidP256      = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
)

// ErrTokenNotFound reports that no slot holds a token with the URI's label or serial.
var ErrTokenNotFound = errors.New("PKCS#11 token not found")

// Config is a parsed URI plus the fallback PIN and logger.
type Config struct {
	URI    URI
	PIN    string       // used when the URI has neither pin-value nor pin-source
	Logger *slog.Logger // if nil, logs are discarded
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c Config) pin() (string, error) {
	switch {
	case c.URI.PINValue != "":
		return c.URI.PINValue, nil
	case c.URI.PINSource != "":
		b, err := os.ReadFile(c.URI.PINSource)
		if err != nil {
			return "", fmt.Errorf("read PKCS#11 PIN: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return c.PIN, nil
}

// Key is a key on a PKCS#11 token. Sign calls are serialised on one session.
type Key struct {
	mu     sync.Mutex
	tok    *token
	uri    URI // where the key is; Seal finds its AES key next to it
	priv   p11.ObjectHandle
	typ    KeyType
	pub    *ecdsa.PublicKey
	id     []byte   // publisher ID
	addr   [20]byte // secp256k1 only
	closed bool
}

var _ streamr.Signer = (*Key)(nil)

// Open finds the URI's private key on its token. A missing key gives an
// error wrapping fs.ErrNotExist.
func Open(ctx context.Context, cfg Config) (*Key, error) {
	tok, err := openToken(ctx, cfg)
	if err != nil {
		return nil, err
	}
	k, err := tok.findKey(cfg.URI)
	if err != nil {
		tok.close()
		return nil, err
	}
	k.uri = cfg.URI
	return k, nil
}

// Create generates a non-extractable key pair of the URI's x-key-type on
// the token. It refuses (fs.ErrExist) if a key with the label exists.
func Create(ctx context.Context, cfg Config) (*Key, error) {
	tok, err := openToken(ctx, cfg)
	if err != nil {
		return nil, err
	}
	k, err := tok.generate(cfg.URI)
	if err != nil {
		tok.close()
		return nil, err
	}
	k.uri = cfg.URI
	cfg.logger().Info("generated key on PKCS#11 token", "token", cfg.URI.Token, "object", cfg.URI.Object, "type", cfg.URI.KeyType)
	return k, nil
}

// Import stores a 32-byte secp256k1 private key on the token as a
// sensitive, non-extractable object. It refuses (fs.ErrExist) if a key
// with the label exists.
func Import(ctx context.Context, cfg Config, priv []byte) (*Key, error) {
	if cfg.URI.KeyType != Secp256k1 {
		return nil, fmt.Errorf("PKCS#11 import takes secp256k1 keys, the URI asks for %s", cfg.URI.KeyType)
	}
	ek, err := streamr.ParseEVMKey(priv)
	if err != nil {
		return nil, err
	}
	tok, err := openToken(ctx, cfg)
	if err != nil {
		return nil, err
	}
	k, err := tok.importK1(cfg.URI, ek.PrivateKey())
	if err != nil {
		tok.close()
		return nil, err
	}
	k.uri = cfg.URI
	return k, nil
}

// token is a logged-in session on one token.
type token struct {
	ctx     *p11.Ctx
	sess    p11.SessionHandle
	ownInit bool // this token called C_Initialize and must C_Finalize
}

func openToken(ctx context.Context, cfg Config) (*token, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pin, err := cfg.pin()
	if err != nil {
		return nil, err
	}
	c := p11.New(cfg.URI.ModulePath)
	if c == nil {
		return nil, fmt.Errorf("load PKCS#11 module %s: dlopen failed", cfg.URI.ModulePath)
	}
	t := &token{ctx: c, ownInit: true}
	if err := c.Initialize(); err != nil {
		if !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			c.Destroy()
			return nil, fmt.Errorf("initialise PKCS#11 module %s: %w", cfg.URI.ModulePath, err)
		}
		t.ownInit = false // another key in this process initialised the module
	}
	if err := t.login(cfg.URI, pin); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *token) login(u URI, pin string) error {
	slot, info, err := t.findSlot(u)
	if err != nil {
		return err
	}
	t.sess, err = t.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("open session on token %q: %w", info.Label, err)
	}
	if info.Flags&p11.CKF_LOGIN_REQUIRED == 0 {
		return nil
	}
	if pin == "" {
		return fmt.Errorf("token %q requires a PIN: give pin-source= in the URI or a passphrase source", info.Label)
	}
	err = t.ctx.Login(t.sess, p11.CKU_USER, pin)
	if err != nil && !errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)) {
		return fmt.Errorf("log in to token %q: %w", info.Label, err)
	}
	return nil
}

// findSlot looks the token up by label (slot IDs change when a token is
// initialised) and serial.
func (t *token) findSlot(u URI) (uint, p11.TokenInfo, error) {
	slots, err := t.ctx.GetSlotList(true)
	if err != nil {
		return 0, p11.TokenInfo{}, fmt.Errorf("list PKCS#11 slots: %w", err)
	}
	for _, s := range slots {
		info, err := t.ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		label := strings.TrimRight(info.Label, " \x00")
		serial := strings.TrimRight(info.SerialNumber, " \x00")
		if (u.Token == "" || label == u.Token) && (u.Serial == "" || serial == u.Serial) {
			info.Label = label
			return s, info, nil
		}
	}
	return 0, p11.TokenInfo{}, fmt.Errorf("%w: label %q serial %q among %d slots", ErrTokenNotFound, u.Token, u.Serial, len(slots))
}

func (t *token) close() {
	if t.sess != 0 {
		_ = t.ctx.CloseSession(t.sess)
	}
	if t.ownInit {
		_ = t.ctx.Finalize()
	}
	t.ctx.Destroy()
}

func keyTemplate(class uint, u URI, id []byte) []*p11.Attribute {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_LABEL, u.Object),
	}
	if len(id) > 0 {
		tmpl = append(tmpl, p11.NewAttribute(p11.CKA_ID, id))
	}
	return tmpl
}

func (t *token) find(tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := t.ctx.FindObjectsInit(t.sess, tmpl); err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	objs, _, err := t.ctx.FindObjects(t.sess, 2)
	if ferr := t.ctx.FindObjectsFinal(t.sess); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("find objects: %w", err)
	}
	return objs, nil
}

func (t *token) findKey(u URI) (*Key, error) {
	privs, err := t.find(keyTemplate(p11.CKO_PRIVATE_KEY, u, u.ID))
	if err != nil {
		return nil, err
	}
	switch len(privs) {
	case 0:
		return nil, fmt.Errorf("PKCS#11 key %q on token %q: %w", u.Object, u.Token, fs.ErrNotExist)
	case 1:
	default:
		return nil, fmt.Errorf("PKCS#11 key %q on token %q is ambiguous: give id= in the URI", u.Object, u.Token)
	}
	attrs, err := t.ctx.GetAttributeValue(t.sess, privs[0], []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, nil)})
	if err != nil {
		return nil, fmt.Errorf("read key ID of %q: %w", u.Object, err)
	}
	pubs, err := t.find(keyTemplate(p11.CKO_PUBLIC_KEY, u, attrs[0].Value))
	if err != nil {
		return nil, err
	}
	if len(pubs) != 1 {
		return nil, fmt.Errorf("PKCS#11 key %q on token %q: found %d public keys with its ID, want 1", u.Object, u.Token, len(pubs))
	}
	return t.newKey(privs[0], pubs[0])
}

func (t *token) exists(u URI) error {
	objs, err := t.find(keyTemplate(p11.CKO_PRIVATE_KEY, u, nil))
	if err != nil {
		return err
	}
	if len(objs) > 0 {
		return fmt.Errorf("PKCS#11 key %q on token %q: %w", u.Object, u.Token, fs.ErrExist)
	}
	return nil
}

func curveParams(typ KeyType) []byte {
	if typ == P256 {
		return oidP256
	}
	return oidSecp256k1
}

func newID() ([]byte, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("key ID: %w", err)
	}
	return id, nil
}

func privateAttrs(u URI, id []byte) []*p11.Attribute {
	return append(keyTemplate(p11.CKO_PRIVATE_KEY, u, id),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
	)
}

func publicAttrs(u URI, id []byte, typ KeyType) []*p11.Attribute {
	return append(keyTemplate(p11.CKO_PUBLIC_KEY, u, id),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_EC_PARAMS, curveParams(typ)),
	)
}

func (t *token) generate(u URI) (*Key, error) {
	if err := t.exists(u); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	pub, priv, err := t.ctx.GenerateKeyPair(t.sess,
		[]*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)},
		publicAttrs(u, id, u.KeyType),
		privateAttrs(u, id))
	if err != nil {
		return nil, fmt.Errorf("generate %s key on token %q: %w", u.KeyType, u.Token, err)
	}
	return t.newKey(priv, pub)
}

func (t *token) importK1(u URI, priv *ecdsa.PrivateKey) (*Key, error) {
	if err := t.exists(u); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	point, err := asn1.Marshal(crypto.FromECDSAPub(&priv.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("encode public point: %w", err)
	}
	d := crypto.FromECDSA(priv)
	defer clear(d)
	privH, err := t.ctx.CreateObject(t.sess, append(privateAttrs(u, id),
		p11.NewAttribute(p11.CKA_EC_PARAMS, oidSecp256k1), p11.NewAttribute(p11.CKA_VALUE, d)))
	if err != nil {
		return nil, fmt.Errorf("import key to token %q: %w", u.Token, err)
	}
	pubH, err := t.ctx.CreateObject(t.sess, append(publicAttrs(u, id, Secp256k1), p11.NewAttribute(p11.CKA_EC_POINT, point)))
	if err != nil {
		_ = t.ctx.DestroyObject(t.sess, privH)
		return nil, fmt.Errorf("import public key to token %q: %w", u.Token, err)
	}
	return t.newKey(privH, pubH)
}

// newKey reads the public key's curve and point and builds the signer.
func (t *token) newKey(priv, pub p11.ObjectHandle) (*Key, error) {
	attrs, err := t.ctx.GetAttributeValue(t.sess, pub, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_EC_PARAMS, nil),
		p11.NewAttribute(p11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	k := &Key{tok: t, priv: priv}
	switch params := attrs[0].Value; {
	case bytes.Equal(params, oidSecp256k1):
		k.typ = Secp256k1
	case bytes.Equal(params, oidP256):
		k.typ = P256
	default:
		return nil, fmt.Errorf("token key curve %x: want secp256k1 or P-256", params)
	}
	if k.pub, err = parseECPoint(k.typ, attrs[1].Value); err != nil {
		return nil, err
	}
	if k.typ == Secp256k1 {
		k.addr = crypto.PubkeyToAddress(*k.pub)
		k.id = k.addr[:]
	} else if k.id, err = streamr.CompressP256(k.pub); err != nil {
		return nil, err
	}
	return k, nil
}

// parseECPoint reads CKA_EC_POINT: DER OCTET STRING(04‖X‖Y). Some tokens
// return the raw point; both are accepted. The point must be on the curve.
func parseECPoint(typ KeyType, v []byte) (*ecdsa.PublicKey, error) {
	raw := v
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		raw = inner
	}
	var (
		pub *ecdsa.PublicKey
		err error
	)
	if typ == P256 {
		pub, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	} else {
		pub, err = crypto.UnmarshalPubkey(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("token %s public key point (%d bytes): %w", typ, len(raw), err)
	}
	return pub, nil
}

// SignatureType implements streamr.Signer.
func (k *Key) SignatureType() streamr.SignatureType {
	if k.typ == P256 {
		return streamr.SignatureSecp256r1
	}
	return streamr.SignatureEVM
}

// PublisherID implements streamr.Signer.
func (k *Key) PublisherID() []byte { return k.id }

// Type returns the key's curve.
func (k *Key) Type() KeyType { return k.typ }

// Sign implements streamr.Signer. The token computes raw ECDSA over the
// digest (EIP-191 Keccak for secp256k1, SHA-256 for P-256).
func (k *Key) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var digest []byte
	if k.typ == P256 {
		h := sha256.Sum256(payload)
		digest = h[:]
	} else {
		digest = streamr.EVMHash(payload)
	}
	rs, err := k.signDigest(digest)
	if err != nil {
		return nil, err
	}
	if len(rs) != 64 {
		return nil, fmt.Errorf("PKCS#11 sign: token returned %d bytes, want 64 (r‖s)", len(rs))
	}
	if k.typ == P256 {
		return rs, nil
	}
	return streamr.EVMSignatureFromRS(digest, rs[:32], rs[32:], k.addr)
}

// SignDigest signs a 32-byte digest as it is, as Ethereum transactions
// need: r‖s‖v (v 27/28). Only secp256k1 keys sign transactions.
func (k *Key) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if k.typ == P256 {
		return nil, errors.New("PKCS#11 sign digest: a P-256 key cannot sign Ethereum transactions")
	}
	rs, err := k.signDigest(digest)
	if err != nil {
		return nil, err
	}
	if len(rs) != 64 {
		return nil, fmt.Errorf("PKCS#11 sign digest: token returned %d bytes, want 64 (r‖s)", len(rs))
	}
	return streamr.EVMSignatureFromRS(digest, rs[:32], rs[32:], k.addr)
}

func (k *Key) signDigest(digest []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, fmt.Errorf("PKCS#11 sign: %w", fs.ErrClosed)
	}
	t := k.tok
	if err := t.ctx.SignInit(t.sess, []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, k.priv); err != nil {
		return nil, fmt.Errorf("PKCS#11 sign init: %w", err)
	}
	rs, err := t.ctx.Sign(t.sess, digest)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 sign: %w", err)
	}
	return rs, nil
}

// Close ends the session (and finalises the module if this key loaded it).
// A second Close returns an error wrapping fs.ErrClosed.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("PKCS#11 key: %w", fs.ErrClosed)
	}
	k.closed = true
	k.tok.close()
	return nil
}
