package hw

import (
	"context"
	"errors"
	"testing"

	"github.com/ethereum/go-ethereum/crypto"

	"github.com/tributary-iot/tributary/hw/internal/signtest"
	"github.com/tributary-iot/tributary/hw/simtest"
	"github.com/tributary-iot/tributary/streamr"
)

// TestTPMURIs drives the tpm backend through the URI API against swtpm.
func TestTPMURIs(t *testing.T) {
	sim := simtest.StartSWTPM(t)
	ctx := context.Background()
	opts := Options{StateDir: t.TempDir()}
	tests := []struct {
		name     string
		uri      string
		wantType streamr.SignatureType
	}{
		{"sealed", "tpm://" + sim.Socket + "?blob=sealed.tpm&pcrs=7", streamr.SignatureEVM},
		{"p256", "tpm://" + sim.Socket + "?type=p256&blob=p256.tpm", streamr.SignatureSecp256r1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(ctx, tt.uri, opts); !errors.Is(err, ErrNoKey) {
				t.Fatalf("Open before Create: %v, want ErrNoKey", err)
			}
			created, err := Create(ctx, tt.uri, opts)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			created.Close()
			if _, err := Create(ctx, tt.uri, opts); !errors.Is(err, ErrKeyExists) {
				t.Fatalf("second Create: %v, want ErrKeyExists", err)
			}
			k, err := Open(ctx, tt.uri, opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer k.Close()
			if Describe(k) != Describe(created) || k.SignatureType() != tt.wantType {
				t.Fatalf("opened %s, created %s, want type %s", Describe(k), Describe(created), tt.wantType)
			}
			signtest.Messages(t, k, "hw-tpm-"+tt.name, 1)
		})
	}
	priv, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Import(ctx, "tpm://"+sim.Socket+"?type=p256&blob=imp.tpm", crypto.FromECDSA(priv), opts)
	if !errors.Is(err, ErrImportUnsupported) {
		t.Fatalf("Import into TPM P-256: %v, want ErrImportUnsupported", err)
	}
	k, err := Import(ctx, "tpm://"+sim.Socket+"?blob=imp.tpm", crypto.FromECDSA(priv), opts)
	if err != nil {
		t.Fatalf("Import sealed: %v", err)
	}
	defer k.Close()
	if want := crypto.PubkeyToAddress(priv.PublicKey); string(k.PublisherID()) != string(want[:]) {
		t.Fatalf("imported %x, want %x", k.PublisherID(), want)
	}
	if _, err := Open(ctx, "tpm://"+sim.Socket+"?type=ecdsa", opts); !errors.Is(err, ErrBadURI) {
		t.Fatalf("bad type: %v, want ErrBadURI", err)
	}
}
