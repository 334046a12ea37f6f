package streamr

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
)

// GroupKeyLen is the size of an AES-256 group key.
const GroupKeyLen = 32

const aesIVLen = aes.BlockSize

// EncryptAES encrypts plaintext with a group key as the SDK's
// encryptWithAES: AES-256-CTR with a fresh random 16-byte IV, which is
// prepended to the ciphertext. There is no MAC: the message signature
// covers the ciphertext.
func EncryptAES(key, plaintext []byte) ([]byte, error) {
	block, err := newGroupKeyCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, aesIVLen+len(plaintext))
	if _, err := rand.Read(out[:aesIVLen]); err != nil {
		return nil, fmt.Errorf("AES IV: %w", err)
	}
	cipher.NewCTR(block, out[:aesIVLen]).XORKeyStream(out[aesIVLen:], plaintext)
	return out, nil
}

// DecryptAES reverses EncryptAES.
func DecryptAES(key, ciphertext []byte) ([]byte, error) {
	block, err := newGroupKeyCipher(key)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) < aesIVLen {
		return nil, fmt.Errorf("AES ciphertext is %d bytes, shorter than its %d-byte IV", len(ciphertext), aesIVLen)
	}
	out := make([]byte, len(ciphertext)-aesIVLen)
	cipher.NewCTR(block, ciphertext[:aesIVLen]).XORKeyStream(out, ciphertext[aesIVLen:])
	return out, nil
}

func newGroupKeyCipher(key []byte) (cipher.Block, error) {
	if len(key) != GroupKeyLen {
		return nil, fmt.Errorf("group key is %d bytes, want %d", len(key), GroupKeyLen)
	}
	return aes.NewCipher(key)
}
