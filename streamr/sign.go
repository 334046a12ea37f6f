package streamr

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"strconv"

	"github.com/ethereum/go-ethereum/crypto"
)

// Signer signs Streamr signature payloads with one identity. Software keys
// and hardware backends (TPM, PKCS#11, secure elements) implement it.
type Signer interface {
	// SignatureType is the algorithm of the signatures Sign returns.
	SignatureType() SignatureType
	// PublisherID is the identity bytes written into MessageID.PublisherID:
	// a 20-byte address for EVM, a 33-byte compressed key for P-256.
	PublisherID() []byte
	// Sign signs the raw payload (the signer hashes it as its type requires).
	Sign(ctx context.Context, payload []byte) ([]byte, error)
}

// Signature lengths per type.
const (
	evmSignatureLen       = 65
	secp256r1SignatureLen = 64
)

// SignMessage sets m's publisher and signature type from s, then signs it.
func SignMessage(ctx context.Context, s Signer, m *StreamMessage) error {
	m.ID.PublisherID = s.PublisherID()
	m.SignatureType = s.SignatureType()
	payload, err := m.SignaturePayload()
	if err != nil {
		return err
	}
	sig, err := s.Sign(ctx, payload)
	if err != nil {
		return fmt.Errorf("sign message %s of %s: %w", m.ID.Ref(), m.ID.StreamPart(), err)
	}
	m.Signature = sig
	return nil
}

// VerifySignature checks m's signature against its publisher ID.
// Only ECDSA_SECP256K1_EVM and ECDSA_SECP256R1 are accepted.
func VerifySignature(m *StreamMessage) error {
	switch m.SignatureType {
	case SignatureEVM, SignatureSecp256r1:
	case SignatureLegacy:
		return fmt.Errorf("signature type %s is not accepted: legacy Brubeck payloads are never verified", m.SignatureType)
	case SignatureERC1271:
		return fmt.Errorf("signature type %s is not accepted: it needs an on-chain isValidSignature call", m.SignatureType)
	case SignatureMLDSA87:
		return fmt.Errorf("signature type %s is not accepted: ML-DSA-87 is not implemented", m.SignatureType)
	default:
		return fmt.Errorf("signature type %s is unknown", m.SignatureType)
	}
	payload, err := m.SignaturePayload()
	if err != nil {
		return err
	}
	if m.SignatureType == SignatureEVM {
		return verifyEVM(m.ID.PublisherID, payload, m.Signature)
	}
	return verifySecp256r1(m.ID.PublisherID, payload, m.Signature)
}

// EVMHash is the EIP-191 personal_sign digest of payload (legacy Keccak-256).
func EVMHash(payload []byte) []byte {
	var prefix [evmPrefixLen]byte
	h := crypto.NewKeccakState()
	h.Write(appendEVMPrefix(prefix[:0], len(payload)))
	h.Write(payload)
	digest := make([]byte, 32)
	_, _ = h.Read(digest) // a Keccak sponge never fails to squeeze
	return digest
}

const evmMagic = "\x19Ethereum Signed Message:\n"

const evmPrefixLen = len(evmMagic) + 20 // 20 digits hold any int64

// appendEVMPrefix appends EIP-191's prefix of a payload of n bytes.
func appendEVMPrefix(dst []byte, n int) []byte {
	return strconv.AppendInt(append(dst, evmMagic...), int64(n), 10)
}

// ErrBadSignature reports a well-formed signature that another key made
// or that covers different bytes.
var ErrBadSignature = errors.New("signature does not match the publisher")

func verifyEVM(publisher, payload, sig []byte) error {
	if len(publisher) != 20 {
		return fmt.Errorf("publisher ID is %d bytes: an EVM publisher is a 20-byte address", len(publisher))
	}
	if len(sig) != evmSignatureLen {
		return fmt.Errorf("EVM signature is %d bytes, want %d", len(sig), evmSignatureLen)
	}
	if v := sig[64]; v != 27 && v != 28 {
		return fmt.Errorf("EVM signature v = %d, want 27 or 28", v)
	}
	var rsv [evmSignatureLen]byte
	copy(rsv[:], sig)
	rsv[64] -= 27
	// EVMHash and the address hash in one Keccak state, into one array.
	var prefix [evmPrefixLen]byte
	var digest [32]byte
	h := crypto.NewKeccakState()
	h.Write(appendEVMPrefix(prefix[:0], len(payload)))
	h.Write(payload)
	_, _ = h.Read(digest[:])
	// The recovered key is compared as bytes: libsecp256k1 returns a
	// point on the curve, so decoding it (a big-integer curve check) and
	// encoding it again for the address would only cost time.
	pub, err := crypto.Ecrecover(digest[:], rsv[:])
	if err != nil {
		return fmt.Errorf("recover EVM signer: %w", err)
	}
	h.Reset()
	h.Write(pub[1:])
	_, _ = h.Read(digest[:])
	if addr := digest[12:]; !bytes.Equal(addr, publisher) {
		return fmt.Errorf("%w: recovered %s, publisher %s", ErrBadSignature, UserID(addr), UserID(publisher))
	}
	return nil
}

func verifySecp256r1(publisher, payload, sig []byte) error {
	pub, err := ParseP256PublicKey(publisher)
	if err != nil {
		return err
	}
	if len(sig) != secp256r1SignatureLen {
		return fmt.Errorf("SECP256R1 signature is %d bytes, want %d (r‖s)", len(sig), secp256r1SignatureLen)
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	h := sha256.Sum256(payload)
	if !ecdsa.Verify(pub, h[:], r, s) {
		return fmt.Errorf("%w: SECP256R1 verification failed for %s", ErrBadSignature, UserID(publisher))
	}
	return nil
}

// ParseP256PublicKey reads a P-256 publisher ID: 33-byte compressed or
// 65-byte uncompressed SEC 1 encoding.
func ParseP256PublicKey(b []byte) (*ecdsa.PublicKey, error) {
	switch len(b) {
	case 33:
		x, y := elliptic.UnmarshalCompressed(elliptic.P256(), b)
		if x == nil {
			return nil, errors.New("publisher ID is not a compressed P-256 point")
		}
		b = make([]byte, 65)
		b[0] = 4
		x.FillBytes(b[1:33])
		y.FillBytes(b[33:])
	case 65:
	default:
		return nil, fmt.Errorf("publisher ID is %d bytes: a P-256 key is 33 (compressed) or 65 bytes", len(b))
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
	if err != nil {
		return nil, fmt.Errorf("publisher ID is not a P-256 point: %w", err)
	}
	return pub, nil
}

// CompressP256 returns the 33-byte SEC 1 compressed form of a P-256 key,
// the publisher ID of ECDSA_SECP256R1 messages.
func CompressP256(pub *ecdsa.PublicKey) ([]byte, error) {
	raw, err := pub.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil {
		return nil, fmt.Errorf("encode P-256 key: %w", err)
	}
	out := make([]byte, 33)
	out[0] = 2 | raw[64]&1
	copy(out[1:], raw[1:33])
	return out, nil
}

// EVMKey is a software secp256k1 key producing ECDSA_SECP256K1_EVM
// signatures. It holds the private key; the zero value is not usable.
type EVMKey struct {
	priv *ecdsa.PrivateKey
	addr [20]byte
}

var _ Signer = (*EVMKey)(nil)

// NewEVMKey wraps a secp256k1 private key.
func NewEVMKey(priv *ecdsa.PrivateKey) *EVMKey {
	return &EVMKey{priv: priv, addr: crypto.PubkeyToAddress(priv.PublicKey)}
}

// GenerateEVMKey creates a fresh random secp256k1 key.
func GenerateEVMKey() (*EVMKey, error) {
	priv, err := crypto.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate secp256k1 key: %w", err)
	}
	return NewEVMKey(priv), nil
}

// ParseEVMKey reads a 32-byte secp256k1 private key.
func ParseEVMKey(b []byte) (*EVMKey, error) {
	priv, err := crypto.ToECDSA(b)
	if err != nil {
		return nil, fmt.Errorf("parse secp256k1 private key: %w", err)
	}
	return NewEVMKey(priv), nil
}

// PrivateKey returns the key for storage in a key file or keystore.
func (k *EVMKey) PrivateKey() *ecdsa.PrivateKey { return k.priv }

// Address returns the Ethereum address of the key.
func (k *EVMKey) Address() [20]byte { return k.addr }

// SignatureType implements Signer.
func (k *EVMKey) SignatureType() SignatureType { return SignatureEVM }

// PublisherID implements Signer: the 20-byte address.
func (k *EVMKey) PublisherID() []byte { return k.addr[:] }

// Sign implements Signer: EIP-191 digest, RFC 6979 ECDSA, r‖s‖v with v 27/28.
func (k *EVMKey) Sign(_ context.Context, payload []byte) ([]byte, error) {
	sig, err := crypto.Sign(EVMHash(payload), k.priv)
	if err != nil {
		return nil, fmt.Errorf("secp256k1 sign: %w", err)
	}
	sig[64] += 27
	return sig, nil
}

// SignDigest signs a 32-byte digest as it is (no EIP-191 prefix): r‖s‖v
// with v 0/1, as Ethereum transactions need.
func (k *EVMKey) SignDigest(_ context.Context, digest []byte) ([]byte, error) {
	sig, err := crypto.Sign(digest, k.priv)
	if err != nil {
		return nil, fmt.Errorf("secp256k1 sign digest: %w", err)
	}
	return sig, nil
}

// P256Key is a software P-256 key producing ECDSA_SECP256R1 signatures.
type P256Key struct {
	priv *ecdsa.PrivateKey
	id   []byte
}

// NewP256Key wraps a P-256 private key.
func NewP256Key(priv *ecdsa.PrivateKey) (*P256Key, error) {
	if priv.Curve != elliptic.P256() {
		return nil, errors.New("key is not on P-256")
	}
	id, err := CompressP256(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &P256Key{priv: priv, id: id}, nil
}

// GenerateP256Key creates a fresh random P-256 key.
func GenerateP256Key() (*P256Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return NewP256Key(priv)
}

// PrivateKey returns the key for storage.
func (k *P256Key) PrivateKey() *ecdsa.PrivateKey { return k.priv }

// SignatureType implements Signer.
func (k *P256Key) SignatureType() SignatureType { return SignatureSecp256r1 }

// PublisherID implements Signer: the 33-byte compressed public key.
func (k *P256Key) PublisherID() []byte { return k.id }

// Sign implements Signer: SHA-256 digest, randomized ECDSA, 64-byte r‖s.
func (k *P256Key) Sign(_ context.Context, payload []byte) ([]byte, error) {
	h := sha256.Sum256(payload)
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, h[:])
	if err != nil {
		return nil, fmt.Errorf("P-256 sign: %w", err)
	}
	return P256Signature(r, s), nil
}

// P256Signature encodes r and s as the 64-byte IEEE P1363 form.
func P256Signature(r, s *big.Int) []byte {
	sig := make([]byte, secp256r1SignatureLen)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig
}

// EVMSignatureFromRS turns a raw secp256k1 (r, s) over digest, as hardware
// tokens return it, into a 65-byte r‖s‖v signature: s is made low (EIP-2)
// and v is found by recovering the key that must match addr.
func EVMSignatureFromRS(digest, r, s []byte, addr [20]byte) ([]byte, error) {
	if len(r) > 32 || len(s) > 32 {
		return nil, fmt.Errorf("r or s longer than 32 bytes (%d, %d)", len(r), len(s))
	}
	sv := new(big.Int).SetBytes(s)
	if n := crypto.S256().Params().N; sv.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		sv.Sub(n, sv)
	}
	sig := make([]byte, evmSignatureLen)
	new(big.Int).SetBytes(r).FillBytes(sig[:32])
	sv.FillBytes(sig[32:64])
	for recid := byte(0); recid < 2; recid++ {
		sig[64] = recid
		pub, err := crypto.SigToPub(digest, sig)
		if err == nil && crypto.PubkeyToAddress(*pub) == addr {
			sig[64] = 27 + recid
			return sig, nil
		}
	}
	return nil, fmt.Errorf("no recovery id yields address %s", UserID(addr[:]))
}
