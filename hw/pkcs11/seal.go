//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"

	p11 "github.com/miekg/pkcs11"
)

// Backend is the SealedBy backend name of PKCS#11 keys.
const Backend = "pkcs11"

// sealSuffix names the token's AES key that seals secrets for the key
// labelled object: object + sealSuffix.
const sealSuffix = ".seal"

// sealAAD binds a sealed blob to its purpose.
var sealAAD = []byte("tributary sealed secret v1")

// sealedBlob is what Seal returns: AES-256-GCM ciphertext made on the
// token with a host-drawn 96-bit IV.
type sealedBlob struct {
	Key        string `json:"key"` // label of the AES key on the token
	IV         []byte `json:"iv"`
	Ciphertext []byte `json:"ciphertext"` // with the 128-bit tag
}

// Seal encrypts secret on the token with AES-256-GCM under a sensitive,
// non-extractable AES key labelled object+".seal", generated on the token
// at first use. Only that token can unseal it.
func (k *Key) Seal(ctx context.Context, secret []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, fmt.Errorf("PKCS#11 seal: %w", fs.ErrClosed)
	}
	label := k.uri.Object + sealSuffix
	aes, err := k.tok.aesKey(k.uri.Token, label, true)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, 12)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("PKCS#11 seal IV: %w", err)
	}
	ct, err := k.tok.gcm(aes, iv, secret, true)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 seal on token %q: %w", k.uri.Token, err)
	}
	out, err := json.Marshal(sealedBlob{Key: label, IV: iv, Ciphertext: ct})
	if err != nil {
		return nil, fmt.Errorf("encode sealed blob: %w", err)
	}
	return out, nil
}

// Unseal decrypts a blob made by Seal on the token.
func (k *Key) Unseal(ctx context.Context, sealed []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var b sealedBlob
	if err := json.Unmarshal(sealed, &b); err != nil {
		return nil, fmt.Errorf("sealed blob: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, fmt.Errorf("PKCS#11 unseal: %w", fs.ErrClosed)
	}
	aes, err := k.tok.aesKey(k.uri.Token, b.Key, false)
	if err != nil {
		return nil, err
	}
	plain, err := k.tok.gcm(aes, b.IV, b.Ciphertext, false)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 unseal with AES key %q on token %q: %w", b.Key, k.uri.Token, err)
	}
	return plain, nil
}

// SealedBy names the token.
func (k *Key) SealedBy() (backend, where string) {
	return Backend, fmt.Sprintf("token %q", k.uri.Token)
}

func aesTemplate(label string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}

// aesKey finds the AES key labelled label, generating it if create is set
// and there is none.
func (t *token) aesKey(tokenLabel, label string, create bool) (p11.ObjectHandle, error) {
	objs, err := t.find(aesTemplate(label))
	if err != nil {
		return 0, err
	}
	switch {
	case len(objs) == 1:
		return objs[0], nil
	case len(objs) > 1:
		return 0, fmt.Errorf("PKCS#11 token %q holds %d AES keys labelled %q, want 1", tokenLabel, len(objs), label)
	case !create:
		return 0, fmt.Errorf("PKCS#11 token %q has no AES key %q (another token, or re-initialised?): %w", tokenLabel, label, fs.ErrNotExist)
	}
	h, err := t.ctx.GenerateKey(t.sess, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
		append(aesTemplate(label),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
		))
	if err != nil {
		return 0, fmt.Errorf("generate AES key %q on token %q: %w", label, tokenLabel, err)
	}
	return h, nil
}

// gcm runs one AES-GCM encryption or decryption on the token.
func (t *token) gcm(key p11.ObjectHandle, iv, in []byte, encrypt bool) ([]byte, error) {
	params := p11.NewGCMParams(iv, sealAAD, 128)
	defer params.Free()
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}
	if encrypt {
		if err := t.ctx.EncryptInit(t.sess, mech, key); err != nil {
			return nil, fmt.Errorf("encrypt init: %w", err)
		}
		return t.ctx.Encrypt(t.sess, in)
	}
	if err := t.ctx.DecryptInit(t.sess, mech, key); err != nil {
		return nil, fmt.Errorf("decrypt init: %w", err)
	}
	return t.ctx.Decrypt(t.sess, in)
}
