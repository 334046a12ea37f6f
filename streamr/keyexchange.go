package streamr

import (
	"bytes"
	"crypto/aes"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RSA-OAEP with SHA-1 is the SDK's key exchange (Node publicEncrypt's default)
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Key exchange ciphers of GroupKeyRequest/GroupKeyResponse (spec §5): the
// subscriber sends a public key, the publisher returns each group key
// encrypted for it.

// DefaultRSAKeyBits is the SDK's rsaKeyLength default.
const DefaultRSAKeyBits = 4096

// Bounds on RSA keys from requests: Go refuses moduli under 1024 bits, and
// a huge modulus would only cost the publisher CPU.
const (
	minRSAKeyBits = 1024
	maxRSAKeyBits = 8192
)

// ML-KEM key exchange layout: kemCiphertext ‖ HKDF salt ‖ IV ‖ AES-CTR(key).
const (
	mlkemSaltLen = 64
	mlkemInfo    = "streamr-key-exchange"
)

const (
	pemPublicHeader = "-----BEGIN PUBLIC KEY-----"
	pemPublicFooter = "-----END PUBLIC KEY-----\n"
)

// KeyExchangeKey is a subscriber's key pair for one key exchange cipher.
type KeyExchangeKey interface {
	Type() AsymmetricEncryptionType
	// PublicKey is what a GroupKeyRequest carries: PEM SPKI text for RSA,
	// the 1568-byte encapsulation key for ML-KEM.
	PublicKey() []byte
	// Decrypt opens one EncryptedGroupKey's data.
	Decrypt(data []byte) ([]byte, error)
	// Private returns the private key's serialised form (PKCS#8 PEM for
	// RSA, the 64-byte seed for ML-KEM), for storage.
	Private() []byte
}

// RSAKey is an RSA-OAEP (SHA-1) key exchange key pair.
type RSAKey struct {
	priv   *rsa.PrivateKey
	public []byte
}

// GenerateRSAKey returns a new RSA key pair of the given modulus size.
func GenerateRSAKey(bits int) (*RSAKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate %d-bit RSA key: %w", bits, err)
	}
	return newRSAKey(priv)
}

// ParseRSAKey reads a PKCS#8 PEM private key (RSAKey.Private, or the SDK's
// RSAKeyPair.getPrivateKey).
func ParseRSAKey(pkcs8PEM []byte) (*RSAKey, error) {
	block, _ := pem.Decode(pkcs8PEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("RSA private key: not a PKCS#8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("RSA private key: %w", err)
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, not RSA", k)
	}
	return newRSAKey(priv)
}

func newRSAKey(priv *rsa.PrivateKey) (*RSAKey, error) {
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode RSA public key: %w", err)
	}
	return &RSAKey{priv: priv, public: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})}, nil
}

// Type implements KeyExchangeKey.
func (k *RSAKey) Type() AsymmetricEncryptionType { return AsymmetricRSA }

// PublicKey implements KeyExchangeKey: UTF-8 PEM SPKI ending in a newline,
// as the SDK sends and checks it.
func (k *RSAKey) PublicKey() []byte { return k.public }

// Decrypt implements KeyExchangeKey.
func (k *RSAKey) Decrypt(data []byte) ([]byte, error) {
	out, err := rsa.DecryptOAEP(sha1.New(), nil, k.priv, data, nil)
	if err != nil {
		return nil, fmt.Errorf("RSA-OAEP: %w", err)
	}
	return out, nil
}

// Private implements KeyExchangeKey.
func (k *RSAKey) Private() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		panic(fmt.Sprintf("PKCS#8 of a valid RSA key: %v", err)) // cannot happen for rsa.PrivateKey
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// MLKEMKey is an ML-KEM-1024 key exchange key pair.
type MLKEMKey struct{ dk *mlkem.DecapsulationKey1024 }

// GenerateMLKEMKey returns a new ML-KEM-1024 key pair.
func GenerateMLKEMKey() (*MLKEMKey, error) {
	dk, err := mlkem.GenerateKey1024()
	if err != nil {
		return nil, fmt.Errorf("generate ML-KEM-1024 key: %w", err)
	}
	return &MLKEMKey{dk}, nil
}

// ParseMLKEMKey reads a 64-byte seed (MLKEMKey.Private).
func ParseMLKEMKey(seed []byte) (*MLKEMKey, error) {
	dk, err := mlkem.NewDecapsulationKey1024(seed)
	if err != nil {
		return nil, fmt.Errorf("ML-KEM-1024 seed: %w", err)
	}
	return &MLKEMKey{dk}, nil
}

// Type implements KeyExchangeKey.
func (k *MLKEMKey) Type() AsymmetricEncryptionType { return AsymmetricMLKEM }

// PublicKey implements KeyExchangeKey.
func (k *MLKEMKey) PublicKey() []byte { return k.dk.EncapsulationKey().Bytes() }

// Private implements KeyExchangeKey.
func (k *MLKEMKey) Private() []byte { return k.dk.Bytes() }

// Decrypt implements KeyExchangeKey.
func (k *MLKEMKey) Decrypt(data []byte) ([]byte, error) {
	if len(data) < mlkem.CiphertextSize1024+mlkemSaltLen+aes.BlockSize {
		return nil, fmt.Errorf("ML-KEM key data is %d bytes, shorter than ciphertext, salt and IV (%d)",
			len(data), mlkem.CiphertextSize1024+mlkemSaltLen+aes.BlockSize)
	}
	kemCT, rest := data[:mlkem.CiphertextSize1024], data[mlkem.CiphertextSize1024:]
	secret, err := k.dk.Decapsulate(kemCT)
	if err != nil {
		return nil, fmt.Errorf("ML-KEM decapsulate: %w", err)
	}
	wrap, err := mlkemWrapKey(secret, rest[:mlkemSaltLen])
	if err != nil {
		return nil, err
	}
	return DecryptAES(wrap, rest[mlkemSaltLen:])
}

func mlkemWrapKey(secret, salt []byte) ([]byte, error) {
	k, err := hkdf.Key(sha512.New, secret, salt, mlkemInfo, GroupKeyLen)
	if err != nil {
		return nil, fmt.Errorf("HKDF-SHA-512: %w", err)
	}
	return k, nil
}

// EncryptForPublicKey encrypts a group key for a GroupKeyRequest's public
// key, as the SDK's EncryptionUtil.encryptForPublicKey.
func EncryptForPublicKey(t AsymmetricEncryptionType, publicKey, plaintext []byte) ([]byte, error) {
	switch t {
	case AsymmetricRSA:
		pub, err := ParseRSAPublicKey(publicKey)
		if err != nil {
			return nil, err
		}
		out, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plaintext, nil)
		if err != nil {
			return nil, fmt.Errorf("RSA-OAEP: %w", err)
		}
		return out, nil
	case AsymmetricMLKEM:
		ek, err := mlkem.NewEncapsulationKey1024(publicKey)
		if err != nil {
			return nil, fmt.Errorf("ML-KEM-1024 public key: %w", err)
		}
		secret, kemCT := ek.Encapsulate()
		return sealMLKEM(secret, kemCT, plaintext)
	}
	return nil, fmt.Errorf("unknown key exchange encryption type %d", t)
}

func sealMLKEM(secret, kemCT, plaintext []byte) ([]byte, error) {
	salt := make([]byte, mlkemSaltLen)
	_, _ = rand.Read(salt)
	wrap, err := mlkemWrapKey(secret, salt)
	if err != nil {
		return nil, err
	}
	ct, err := EncryptAES(wrap, plaintext)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(kemCT)+len(salt)+len(ct))
	return append(append(append(out, kemCT...), salt...), ct...), nil
}

// ParseRSAPublicKey reads a GroupKeyRequest's RSA public key: UTF-8 PEM
// SPKI text framed exactly as the SDK requires.
func ParseRSAPublicKey(b []byte) (*rsa.PublicKey, error) {
	if !bytes.HasPrefix(b, []byte(pemPublicHeader)) || !bytes.HasSuffix(b, []byte(pemPublicFooter)) {
		return nil, errors.New("publicKey: not an RSA public key (SPKI) in PEM format")
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("publicKey: not one PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("publicKey: %w", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("publicKey is %T, not RSA", k)
	}
	if n := pub.N.BitLen(); n < minRSAKeyBits || n > maxRSAKeyBits {
		return nil, fmt.Errorf("publicKey: %d-bit RSA modulus outside %d..%d", n, minRSAKeyBits, maxRSAKeyBits)
	}
	return pub, nil
}
