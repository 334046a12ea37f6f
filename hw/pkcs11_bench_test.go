//go:build pkcs11 && cgo

package hw

import (
	"context"
	"testing"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// BenchmarkSignPKCS11 measures SoftHSM2 signatures; secp256k1 includes the
// low-S and recovery-id work (one or two Ecrecover per signature).
func BenchmarkSignPKCS11(b *testing.B) {
	h := simtest.StartSoftHSM(b, "bench")
	payload := make([]byte, 200)
	for _, typ := range []string{"secp256k1", "p256"} {
		b.Run(typ, func(b *testing.B) {
			uri := "pkcs11:token=bench;object=" + typ + "?module-path=" + h.Module + "&pin-value=" + h.PIN + "&x-key-type=" + typ
			k, err := Create(context.Background(), uri, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer k.Close()
			ctx := context.Background()
			for b.Loop() {
				if _, err := k.Sign(ctx, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
