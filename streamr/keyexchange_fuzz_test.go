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

// FuzzKeyExchangeDecrypt opens GroupKeyResponse key data of any bytes
// with both ciphers: no panic, and nothing opens to a key but what was
// sealed for it.
func FuzzKeyExchangeDecrypt(f *testing.F) {
	mk, err := GenerateMLKEMKey()
	if err != nil {
		f.Fatal(err)
	}
	rk := testRSAKey(f)
	for _, kx := range []KeyExchangeKey{rk, mk} {
		data, err := EncryptForPublicKey(kx.Type(), kx.PublicKey(), make([]byte, GroupKeyLen))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, kx := range []KeyExchangeKey{rk, mk} {
			_, _ = kx.Decrypt(b)
		}
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
