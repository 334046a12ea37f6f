package hw

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/tributary-iot/tributary/streamr"
)

// TestECCURI opens an ecc:// key over a replayed transcript of a real
// exchange (wake, GenKey, idle; then sleep on Close).
func TestECCURI(t *testing.T) {
	raw, err := os.ReadFile("ecc/testdata/transcripts.json")
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		PublicKey string
		GenKey    []struct {
			Addr uint16
			W, R string
		}
	}
	if err := json.Unmarshal(raw, &tr); err != nil {
		t.Fatal(err)
	}
	var ops []i2ctest.IO
	for _, op := range tr.GenKey {
		ops = append(ops, i2ctest.IO{Addr: op.Addr, W: unhex(t, op.W), R: unhex(t, op.R)})
	}
	ops = append(ops, i2ctest.IO{Addr: 0x60, W: []byte{0x01}}) // sleep on Close
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	var opened string
	opts := Options{OpenI2C: func(name string) (i2c.BusCloser, error) { opened = name; return bus, nil }}

	k, err := Open(context.Background(), "ecc://i2c-1:96?slot=0", opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	pub, err := streamr.ParseP256PublicKey(unhex(t, tr.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	id, err := streamr.CompressP256(pub)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Describe(k), streamr.UserID(id)+" (ECDSA_SECP256R1)"; got != want || opened != "1" {
		t.Fatalf("Describe = %q on bus %q, want %q on bus 1", got, opened, want)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("Close (must sleep the chip and consume the whole transcript): %v", err)
	}

	if _, err := Create(context.Background(), "ecc://i2c-1:96", opts); err == nil {
		t.Fatal("Create on ecc succeeded; keys must come from provisioning")
	}
	if _, err := Import(context.Background(), "ecc://i2c-1:96", make([]byte, 32), opts); !errors.Is(err, ErrImportUnsupported) {
		t.Fatalf("Import on ecc: %v, want ErrImportUnsupported", err)
	}
	if _, err := Open(context.Background(), "ecc://spi-0:96", opts); !errors.Is(err, ErrBadURI) {
		t.Fatalf("Open(ecc://spi-0): %v, want ErrBadURI", err)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
