package streamr

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

func TestAESRoundTrip(t *testing.T) {
	key := make([]byte, GroupKeyLen)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	for _, plain := range [][]byte{nil, []byte("x"), []byte(`{"temperature":21.5,"unit":"°C"}`), bytes.Repeat([]byte{0xab}, 1000)} {
		ct, err := EncryptAES(key, plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(ct) != 16+len(plain) {
			t.Fatalf("ciphertext is %d bytes for %d bytes of plaintext", len(ct), len(plain))
		}
		again, err := EncryptAES(key, plain)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(ct[:16], again[:16]) {
			t.Fatal("two encryptions used the same IV")
		}
		got, err := DecryptAES(key, ct)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("DecryptAES = %q, want %q", got, plain)
		}
	}
}

// A NIST SP 800-38A F.5.5 (CTR-AES256) block: Node's aes-256-ctr and Go's
// cipher.NewCTR both treat the IV as a 128-bit big-endian counter. The
// cross-check test also decrypts Go ciphertexts with node:crypto.
func TestAESKnownAnswer(t *testing.T) {
	key := mustHex(t, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
	iv := mustHex(t, "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
	plain := mustHex(t, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
	want := mustHex(t, "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5")
	got, err := DecryptAES(key, append(bytes.Clone(iv), want...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("DecryptAES = %x, want %x", got, plain)
	}
}

func TestAESErrors(t *testing.T) {
	if _, err := EncryptAES(make([]byte, 16), nil); err == nil || !strings.Contains(err.Error(), "group key is 16 bytes, want 32") {
		t.Errorf("EncryptAES with a 16-byte key: %v", err)
	}
	if _, err := DecryptAES(make([]byte, 32), make([]byte, 15)); err == nil || !strings.Contains(err.Error(), "shorter than its 16-byte IV") {
		t.Errorf("DecryptAES of 15 bytes: %v", err)
	}
	if _, err := DecryptAES(nil, make([]byte, 20)); err == nil {
		t.Error("DecryptAES with no key: no error")
	}
}
