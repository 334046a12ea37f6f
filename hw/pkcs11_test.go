//go:build pkcs11 && cgo

package hw

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tributary-iot/tributary/hw/internal/signtest"
	"github.com/tributary-iot/tributary/hw/simtest"
	"github.com/tributary-iot/tributary/streamr"
)

// TestPKCS11URIs drives the pkcs11 backend through the URI API against
// SoftHSM2, with the PIN from each kind of source.
func TestPKCS11URIs(t *testing.T) {
	h := simtest.StartSoftHSM(t, "gw")
	ctx := context.Background()
	base := "pkcs11:token=gw;object="
	mod := "?module-path=" + h.Module
	pinEnv := Options{Passphrase: PassphraseSource{Env: "PIN"}, Getenv: func(string) string { return h.PIN }}
	tests := []struct {
		name     string
		uri      string
		opts     Options
		wantType streamr.SignatureType
	}{
		{"secp256k1 pin-value", base + "k1" + mod + "&pin-value=" + h.PIN, Options{}, streamr.SignatureEVM},
		{"p256 pin from env", base + "r1" + mod + "&x-key-type=p256", pinEnv, streamr.SignatureSecp256r1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(ctx, tt.uri, tt.opts); !errors.Is(err, ErrNoKey) {
				t.Fatalf("Open before Create: %v, want ErrNoKey", err)
			}
			created, err := Create(ctx, tt.uri, tt.opts)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			created.Close()
			if _, err := Create(ctx, tt.uri, tt.opts); !errors.Is(err, ErrKeyExists) {
				t.Fatalf("second Create: %v, want ErrKeyExists", err)
			}
			k, err := Open(ctx, tt.uri, tt.opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer k.Close()
			if Describe(k) != Describe(created) || k.SignatureType() != tt.wantType {
				t.Fatalf("opened %s, created %s, want type %s", Describe(k), Describe(created), tt.wantType)
			}
			signtest.Messages(t, k, "hw-pkcs11-"+strings.ReplaceAll(tt.name, " ", "-"), 1)
		})
	}
	priv, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Import(ctx, base+"imp"+mod+"&x-key-type=p256", crypto.FromECDSA(priv), pinEnv); !errors.Is(err, ErrImportUnsupported) {
		t.Fatalf("Import P-256: %v, want ErrImportUnsupported", err)
	}
	k, err := Import(ctx, base+"imp"+mod, crypto.FromECDSA(priv), pinEnv)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	k.Close()
}
