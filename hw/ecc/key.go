package ecc

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/streamr"
)

// Config names a key slot on a chip.
type Config struct {
	Bus  string // I2C bus name for periph's i2creg, e.g. "1" for /dev/i2c-1
	Addr uint16 // 7-bit address
	Slot int    // key slot 0-15
}

// ParseURI reads a key URI in the form Helium's gateway uses:
//
//	ecc://i2c-1:96?slot=0
//
// where the host names the bus, the port is the 7-bit address in decimal
// (96 = 0x60) and slot defaults to 0.
func ParseURI(uri string) (Config, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return Config{}, fmt.Errorf("ECC key URI: %w", err)
	}
	if u.Scheme != "ecc" {
		return Config{}, fmt.Errorf("ECC key URI %q: scheme must be ecc", uri)
	}
	bus, ok := strings.CutPrefix(u.Hostname(), "i2c-")
	if !ok || bus == "" {
		return Config{}, fmt.Errorf("ECC key URI %q: host must name the bus as i2c-N", uri)
	}
	cfg := Config{Bus: bus, Addr: DefaultAddr}
	if p := u.Port(); p != "" {
		a, err := strconv.ParseUint(p, 10, 7)
		if err != nil {
			return Config{}, fmt.Errorf("ECC key URI %q: address %q is not a 7-bit decimal number", uri, p)
		}
		cfg.Addr = uint16(a)
	}
	q := u.Query()
	for name := range q {
		if name != "slot" {
			return Config{}, fmt.Errorf("ECC key URI %q: unknown parameter %q (want slot)", uri, name)
		}
	}
	if s := q.Get("slot"); s != "" {
		if cfg.Slot, err = strconv.Atoi(s); err != nil || checkSlot(cfg.Slot) != nil {
			return Config{}, fmt.Errorf("ECC key URI %q: slot %q is not 0-15", uri, s)
		}
	}
	if u.Path != "" && u.Path != "/" {
		return Config{}, fmt.Errorf("ECC key URI %q: unexpected path %q", uri, u.Path)
	}
	return cfg, nil
}

// Key signs ECDSA_SECP256R1 messages with the private key in one slot.
type Key struct {
	dev    *Device
	slot   int
	pub    *ecdsa.PublicKey
	id     []byte
	closer io.Closer
}

var _ streamr.Signer = (*Key)(nil)

// Open reads the slot's public key and returns a signer. closer (the I2C
// bus, may be nil) is closed by Key.Close.
func Open(ctx context.Context, dev *Device, slot int, closer io.Closer) (*Key, error) {
	pub, err := dev.PublicKey(ctx, slot)
	if err != nil {
		return nil, err
	}
	return NewKey(dev, slot, pub, closer)
}

// NewKey wraps a slot whose public key is already known (after Provision).
func NewKey(dev *Device, slot int, pub *ecdsa.PublicKey, closer io.Closer) (*Key, error) {
	id, err := streamr.CompressP256(pub)
	if err != nil {
		return nil, err
	}
	return &Key{dev: dev, slot: slot, pub: pub, id: id, closer: closer}, nil
}

// SignatureType implements streamr.Signer.
func (k *Key) SignatureType() streamr.SignatureType { return streamr.SignatureSecp256r1 }

// PublisherID implements streamr.Signer: the compressed public key.
func (k *Key) PublisherID() []byte { return k.id }

// PublicKey returns the slot's public key.
func (k *Key) PublicKey() *ecdsa.PublicKey { return k.pub }

// Sign implements streamr.Signer: SHA-256 of payload, signed by the chip.
// The signature is verified before it is returned, so a wrong slot setup
// or a corrupted transfer never yields an invalid message.
func (k *Key) Sign(ctx context.Context, payload []byte) ([]byte, error) {
	digest := sha256.Sum256(payload)
	sig, err := k.dev.SignDigest(ctx, k.slot, digest[:])
	if err != nil {
		return nil, err
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(k.pub, digest[:], r, s) {
		return nil, fmt.Errorf("ATECC slot %d returned a signature that does not verify against its public key", k.slot)
	}
	return sig, nil
}

// Close puts the chip to sleep and closes the bus if Open was given one.
func (k *Key) Close() error {
	err := k.dev.Sleep()
	if k.closer != nil {
		if cerr := k.closer.Close(); cerr != nil {
			return cerr
		}
	}
	return err
}
