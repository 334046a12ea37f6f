//go:build pkcs11 && cgo

package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// TestSealOnToken: Seal encrypts on the token under an AES key that is
// sensitive and not extractable; the blob opens on the same token only
// for the same ciphertext.
func TestSealOnToken(t *testing.T) {
	h := simtest.StartSoftHSM(t, "gw")
	ctx := context.Background()
	k, err := Create(ctx, softConfig(h, "gw-key", P256))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	secret := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := k.Seal(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed blob holds the secret")
	}
	got, err := k.Unseal(ctx, sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal: %q, %v", got, err)
	}
	aes, err := k.tok.aesKey("gw", "gw-key"+sealSuffix, false)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := k.tok.ctx.GetAttributeValue(k.tok.sess, aes, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil), p11.NewAttribute(p11.CKA_TOKEN, nil),
	})
	if err != nil || !bytes.Equal(attrs[0].Value, []byte{1}) || !bytes.Equal(attrs[1].Value, []byte{0}) || !bytes.Equal(attrs[2].Value, []byte{1}) {
		t.Fatalf("AES key attributes sensitive/extractable/token = %v (%v), want true/false/true", attrs, err)
	}
	if _, err := k.tok.ctx.GetAttributeValue(k.tok.sess, aes, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); !errors.Is(err, p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)) {
		t.Fatalf("reading the AES key's CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}
	sealed[len(sealed)-3] ^= 1 // inside the base64 of the ciphertext
	if _, err := k.Unseal(ctx, sealed); err == nil {
		t.Fatal("a changed blob unsealed")
	}
}
