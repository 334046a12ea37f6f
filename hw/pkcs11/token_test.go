//go:build pkcs11 && cgo

package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"
	p11 "github.com/miekg/pkcs11"

	"github.com/tributary-iot/tributary/hw/internal/signtest"
	"github.com/tributary-iot/tributary/hw/simtest"
	"github.com/tributary-iot/tributary/streamr"
)

func softConfig(h *simtest.SoftHSM, object string, typ KeyType) Config {
	return Config{URI: URI{Token: h.Label, Object: object, ModulePath: h.Module, KeyType: typ}, PIN: h.PIN}
}

func TestCreateOpenSign(t *testing.T) {
	h := simtest.StartSoftHSM(t, "gw")
	tests := []struct {
		typ      KeyType
		wantType streamr.SignatureType
		wantID   int
	}{
		{Secp256k1, streamr.SignatureEVM, 20},
		{P256, streamr.SignatureSecp256r1, 33},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ), func(t *testing.T) {
			ctx := context.Background()
			cfg := softConfig(h, "key-"+string(tt.typ), tt.typ)
			created, err := Create(ctx, cfg)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			checkNotExtractable(t, created)
			if err := created.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := Create(ctx, cfg); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("second Create: %v, want fs.ErrExist", err)
			}
			k, err := Open(ctx, cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer k.Close()
			if !bytes.Equal(k.PublisherID(), created.PublisherID()) {
				t.Fatalf("opened %x, created %x", k.PublisherID(), created.PublisherID())
			}
			if k.SignatureType() != tt.wantType || len(k.PublisherID()) != tt.wantID {
				t.Fatalf("type %v id %d bytes, want %v %d", k.SignatureType(), len(k.PublisherID()), tt.wantType, tt.wantID)
			}
			// About half of the token's raw secp256k1 signatures are
			// high-S, so 16 messages exercise the low-S conversion.
			msgs := signtest.Messages(t, k, "pkcs11-"+string(tt.typ), 16)
			if tt.typ == Secp256k1 {
				checkLowS(t, msgs)
			}
		})
	}
}

func checkNotExtractable(t *testing.T, k *Key) {
	t.Helper()
	_, err := k.tok.ctx.GetAttributeValue(k.tok.sess, k.priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	if !errors.Is(err, p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)) {
		t.Fatalf("reading CKA_VALUE of the private key: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}
}

func checkLowS(t *testing.T, msgs []*streamr.StreamMessage) {
	t.Helper()
	half := secp256k1HalfN()
	for i, m := range msgs {
		if bytes.Compare(m.Signature[32:64], half) > 0 {
			t.Fatalf("message %d has a high-S signature", i)
		}
	}
}

// secp256k1HalfN is N/2 of secp256k1 as 32 big-endian bytes.
func secp256k1HalfN() []byte {
	return new(big.Int).Rsh(crypto.S256().Params().N, 1).FillBytes(make([]byte, 32))
}

func TestImport(t *testing.T) {
	h := simtest.StartSoftHSM(t, "gw")
	priv, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := softConfig(h, "imported", Secp256k1)
	k, err := Import(context.Background(), cfg, crypto.FromECDSA(priv))
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	checkNotExtractable(t, k)
	k.Close()
	if _, err := Import(context.Background(), cfg, crypto.FromECDSA(priv)); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Import: %v, want fs.ErrExist", err)
	}
	k, err = Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer k.Close()
	if want := crypto.PubkeyToAddress(priv.PublicKey); !bytes.Equal(k.PublisherID(), want[:]) {
		t.Fatalf("imported key is %x, want %x", k.PublisherID(), want)
	}
	signtest.Messages(t, k, "pkcs11-imported", 2)
}

func TestOpenErrors(t *testing.T) {
	h := simtest.StartSoftHSM(t, "gw")
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(h.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := Create(context.Background(), softConfig(h, "present", Secp256k1))
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantIs  error
		wantMsg string
	}{
		{"pin from pin-source", func(c *Config) { c.PIN = ""; c.URI.PINSource = pinFile }, nil, ""},
		{"missing key", func(c *Config) { c.URI.Object = "absent" }, fs.ErrNotExist, "absent"},
		{"unknown token", func(c *Config) { c.URI.Token = "nope" }, ErrTokenNotFound, "nope"},
		{"wrong PIN", func(c *Config) { c.PIN = "0000" }, nil, "CKR_PIN_INCORRECT"},
		{"no PIN", func(c *Config) { c.PIN = "" }, nil, "requires a PIN"},
		{"bad module", func(c *Config) { c.URI.ModulePath = "/nonexistent.so" }, nil, "dlopen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := softConfig(h, "present", Secp256k1)
			tt.mutate(&cfg)
			k, err := Open(context.Background(), cfg)
			if tt.wantMsg == "" && tt.wantIs == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				k.Close()
				return
			}
			if err == nil {
				k.Close()
				t.Fatal("Open succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}
