package streamr

import (
	"testing"
)

// FuzzParseRSAPublicKey reads GroupKeyRequest public keys of any bytes:
// no panic, and what parses is within the accepted modulus sizes.
func FuzzParseRSAPublicKey(f *testing.F) {
	f.Add(testRSAKey(f).PublicKey())
	f.Add([]byte(pemPublicHeader + "\n" + pemPublicFooter))
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := ParseRSAPublicKey(b)
		if err == nil && (pub.N.BitLen() < minRSAKeyBits || pub.N.BitLen() > maxRSAKeyBits) {
			t.Fatalf("accepted a %d-bit modulus", pub.N.BitLen())
		}
	})
}

// FuzzKeyExchangeDecrypt opens GroupKeyResponse key data of any bytes with
// the ML-KEM layout (ciphertext ‖ salt ‖ IV ‖ AES-CTR), and seals for
// GroupKeyRequest public keys of any bytes: no panic. RSA-OAEP decryption
// is left out: past a length check it is the standard library's, and its
// private-key operation would dominate every exec.
func FuzzKeyExchangeDecrypt(f *testing.F) {
	mk, err := GenerateMLKEMKey()
	if err != nil {
		f.Fatal(err)
	}
	data, err := EncryptForPublicKey(AsymmetricMLKEM, mk.PublicKey(), make([]byte, GroupKeyLen))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(mk.PublicKey())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = mk.Decrypt(b)
		_, _ = EncryptForPublicKey(AsymmetricMLKEM, b, make([]byte, GroupKeyLen))
	})
}

// FuzzDecryptNext opens rotation announcements of any bytes.
func FuzzDecryptNext(f *testing.F) {
	k, _ := NewGroupKey("a-GroupKey1")
	n, _ := NewGroupKey("a-GroupKey2")
	e, _ := k.EncryptNext(n)
	f.Add(e.ID, e.Data)
	f.Fuzz(func(t *testing.T, id string, data []byte) {
		got, err := k.DecryptNext(EncryptedGroupKey{ID: id, Data: data})
		if err == nil && len(got.Data) != GroupKeyLen {
			t.Fatalf("a %d-byte next key", len(got.Data))
		}
	})
}
