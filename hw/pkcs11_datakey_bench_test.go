//go:build pkcs11 && cgo

package hw

import (
	"testing"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// BenchmarkOpenDataKeyPKCS11: reading the data key and decrypting it on
// SoftHSM2 (AES-256-GCM on the token).
func BenchmarkOpenDataKeyPKCS11(b *testing.B) {
	h := simtest.StartSoftHSM(b, "gw")
	benchOpenDataKey(b, "pkcs11:token=gw;object=k1?module-path="+h.Module+"&pin-value="+h.PIN, Options{})
}
