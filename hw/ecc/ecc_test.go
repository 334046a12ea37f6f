package ecc

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/tributary-iot/tributary/hw/internal/signtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite testdata/transcripts.json from the fake chip")

func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func newTestDevice(bus i2c.Bus) *Device {
	return New(bus, Options{Sleep: noSleep})
}

func TestPackets(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"info", command{op: opInfo}.packet(), []byte{0x03, 0x07, 0x30, 0x00, 0x00, 0x00, 0x03, 0x5D}},
		{"genkey public slot 2", command{op: opGenKey, p1: genKeyPublic, p2: 2}.packet()[:6], []byte{0x03, 0x07, 0x40, 0x00, 0x02, 0x00}},
		{"nonce length", command{op: opNonce, p1: 3, data: make([]byte, 32)}.packet()[:2], []byte{0x03, 39}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Fatalf("packet % x, want % x", tt.got, tt.want)
			}
		})
	}
	if crc := crc16(wakeResponse[:2]); crc != 0x4333 {
		t.Fatalf("CRC of wake response = %04x, want 4333", crc)
	}
}

func TestParseResponse(t *testing.T) {
	ok := func(data ...byte) []byte {
		rsp := append([]byte{byte(len(data) + 3)}, data...)
		crc := crc16(rsp)
		return append(rsp, byte(crc), byte(crc>>8))
	}
	tests := []struct {
		name    string
		rsp     []byte
		want    int
		wantErr error
	}{
		{"info", ok(0, 0, 0x60, 2), 4, nil},
		{"status ok", ok(0), 1, nil},
		{"execution error", ok(0x0F), 64, StatusExecution},
		{"nonce refused", ok(0x03), 1, StatusParse},
		{"bad crc", append(ok(0, 0, 0x60)[:5], 0, 0), 3, ErrCRC},
		{"count mismatch", []byte{9, 0, 0, 0}, 4, ErrCRC},
		{"too short", []byte{3, 0}, 1, ErrCRC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseResponse(tt.rsp, tt.want)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("parseResponse error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte{0x04, 0x11, 0x33, 0x43}, 1)
	f.Add([]byte{0x07, 0, 0, 0x60, 2, 0, 0}, 4)
	f.Fuzz(func(t *testing.T, rsp []byte, want int) {
		data, err := parseResponse(rsp, want)
		if err == nil && len(data) != want {
			t.Fatalf("accepted %d data bytes, want %d", len(data), want)
		}
	})
}

func TestSignWithFakeChip(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(c *fakeChip)
		wantErr   error
		wantTries int // wake sequences the chip saw executing Nonce
	}{
		{"clean", func(*fakeChip) {}, nil, 1},
		{"busy NACKs", func(c *fakeChip) { c.busyPolls = 8 }, nil, 1},
		{"one corrupted response", func(c *fakeChip) { c.corrupt = 1 }, nil, 2},
		{"bad wake answer once", func(c *fakeChip) { c.badWake = 1 }, nil, 1},
		{"always corrupted", func(c *fakeChip) { c.corrupt = 1000 }, ErrCRC, 3},
		{"never wakes", func(c *fakeChip) { c.neverWakes = true }, ErrNoWake, 0},
		{"busy forever", func(c *fakeChip) { c.busyPolls = 1000 }, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chip := provisionedChip(3)
			pub := &chip.keys[3].PublicKey
			tt.setup(chip)
			dev := newTestDevice(chip)
			digest := sha256.Sum256([]byte(tt.name))
			sig, err := dev.SignDigest(context.Background(), 3, digest[:])
			nonces := bytes.Count(chip.commands, []byte{opNonce})
			if tt.name == "busy forever" {
				var be busError
				if !errors.As(err, &be) {
					t.Fatalf("error %v, want a bus timeout", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("SignDigest error %v, want %v", err, tt.wantErr)
			}
			if nonces != tt.wantTries {
				t.Errorf("chip ran Nonce %d times, want %d", nonces, tt.wantTries)
			}
			if err != nil {
				return
			}
			if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				t.Fatal("signature does not verify")
			}
		})
	}
}

func TestExecutionErrorNotRetried(t *testing.T) {
	chip := provisionedChip(0)
	dev := newTestDevice(chip)
	_, err := dev.SignDigest(context.Background(), 5, make([]byte, 32)) // slot 5 holds no key
	if !errors.Is(err, StatusExecution) {
		t.Fatalf("error %v, want StatusExecution", err)
	}
	if n := bytes.Count(chip.commands, []byte{opSign}); n != 1 {
		t.Fatalf("Sign sent %d times, want 1 (a refusal is not retried)", n)
	}
}

func TestKeySignsMessages(t *testing.T) {
	chip := provisionedChip(0)
	k, err := Open(context.Background(), newTestDevice(chip), 0, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer k.Close()
	signtest.Messages(t, k, "ecc-p256", 3)
	if chip.awake {
		t.Error("chip left awake after Close")
	}
}

func TestProvision(t *testing.T) {
	ctx := context.Background()
	chip := newFakeChip()
	dev := newTestDevice(chip)

	refuse := errors.New("operator said no")
	if _, err := dev.Provision(ctx, 0, func(ChipInfo) error { return refuse }); !errors.Is(err, refuse) {
		t.Fatalf("refused Provision: %v", err)
	}
	if bytes.Contains(chip.commands, []byte{opWrite}) || bytes.Contains(chip.commands, []byte{opLock}) {
		t.Fatal("chip was written although the confirmation refused")
	}

	var seen ChipInfo
	pub, err := dev.Provision(ctx, 0, func(info ChipInfo) error { seen = info; return nil })
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	want := ChipInfo{Revision: [4]byte{0, 0, 0x60, 2}, Serial: [9]byte{0x01, 0x23, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0xee}}
	if seen != want {
		t.Errorf("confirmation saw %v, want %v", seen, want)
	}
	if got := chip.config[slotConfigOffset : slotConfigOffset+2]; !bytes.Equal(got, keySlotConfig[:]) {
		t.Errorf("SlotConfig[0] = % x, want % x", got, keySlotConfig)
	}
	if got := chip.config[keyConfigOffset : keyConfigOffset+2]; !bytes.Equal(got, keyKeyConfig[:]) {
		t.Errorf("KeyConfig[0] = % x, want % x", got, keyKeyConfig)
	}
	info, err := dev.Describe(ctx)
	if err != nil || !info.ConfigLocked || !info.DataLocked {
		t.Fatalf("after Provision: %v, %v; want both zones locked", info, err)
	}
	k, err := Open(ctx, dev, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !k.PublicKey().Equal(pub) {
		t.Fatal("Open returned a different key than Provision")
	}
	signtest.Messages(t, k, "ecc-provisioned", 1)

	if _, err := dev.Provision(ctx, 0, func(ChipInfo) error { t.Fatal("asked to confirm a locked chip"); return nil }); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Provision: %v, want ErrLocked", err)
	}
}

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    Config
		wantErr bool
	}{
		{uri: "ecc://i2c-1:96?slot=0", want: Config{Bus: "1", Addr: 0x60, Slot: 0}},
		{uri: "ecc://i2c-0", want: Config{Bus: "0", Addr: 0x60}},
		{uri: "ecc://i2c-1:53?slot=15", want: Config{Bus: "1", Addr: 0x35, Slot: 15}},
		{uri: "ecc://i2c-1:96?slot=16", wantErr: true},
		{uri: "ecc://i2c-1:200", wantErr: true},
		{uri: "ecc://spi-1:96", wantErr: true},
		{uri: "ecc://i2c-1:96?key=0", wantErr: true},
		{uri: "ecc://i2c-1:96/x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := ParseURI(tt.uri)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Fatalf("ParseURI = %+v, %v; want %+v (error %t)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// transcripts are exact byte sequences of the driver talking to a chip,
// recorded once from the fake chip (go test -run Playback -update) and
// replayed with i2ctest.Playback, which fails on any differing byte.
type transcripts struct {
	PublicKey hexBytes // uncompressed key in slot 0
	Digest    hexBytes // digest signed by "sign"
	Info      []ioHex  // wake, Info, idle
	GenKey    []ioHex  // wake, GenKey (public, slot 0), idle
	Sign      []ioHex  // wake, Nonce, Sign, idle
}

// hexBytes keeps the transcript file readable as bytes on the wire.
type hexBytes []byte

func (h hexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

func (h *hexBytes) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	*h = v
	return err
}

// ioHex is an i2ctest.IO with hex bytes.
type ioHex struct {
	Addr uint16
	W, R hexBytes
}

func toIO(ops []ioHex) []i2ctest.IO {
	out := make([]i2ctest.IO, len(ops))
	for i, op := range ops {
		out[i] = i2ctest.IO{Addr: op.Addr}
		if len(op.W) > 0 {
			out[i].W = op.W
		}
		if len(op.R) > 0 {
			out[i].R = op.R
		}
	}
	return out
}

func fromIO(ops []i2ctest.IO) []ioHex {
	out := make([]ioHex, len(ops))
	for i, op := range ops {
		out[i] = ioHex{Addr: op.Addr, W: op.W, R: op.R}
	}
	return out
}

const transcriptFile = "testdata/transcripts.json"

func TestPlayback(t *testing.T) {
	if *update {
		recordTranscripts(t)
	}
	raw, err := os.ReadFile(transcriptFile)
	if err != nil {
		t.Fatal(err)
	}
	var tr transcripts
	if err := json.Unmarshal(raw, &tr); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	play := func(ops []ioHex) (*i2ctest.Playback, *Device) {
		p := &i2ctest.Playback{Ops: toIO(ops), DontPanic: true}
		return p, newTestDevice(p)
	}

	p, dev := play(tr.Info)
	rev, err := dev.Info(ctx)
	if err != nil || rev != [4]byte{0, 0, 0x60, 2} {
		t.Fatalf("Info = % x, %v", rev, err)
	}
	closePlayback(t, p)

	p, dev = play(tr.GenKey)
	pub, err := dev.PublicKey(ctx, 0)
	if err != nil {
		t.Fatalf("GenKey: %v", err)
	}
	closePlayback(t, p)
	if raw, _ := pub.Bytes(); !bytes.Equal(raw, tr.PublicKey) {
		t.Fatalf("GenKey public key % x, want % x", raw, tr.PublicKey)
	}

	p, dev = play(tr.Sign)
	sig, err := dev.SignDigest(ctx, 0, tr.Digest)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	closePlayback(t, p)
	if !ecdsa.Verify(pub, tr.Digest, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("replayed signature does not verify")
	}
	wantWake := []i2ctest.IO{{Addr: 0, W: []byte{0}}, {Addr: DefaultAddr, R: wakeResponse}}
	if !reflect.DeepEqual(toIO(tr.Sign[:2]), wantWake) {
		t.Errorf("transcript starts % x, want the wake sequence % x", tr.Sign[:2], wantWake)
	}
}

func closePlayback(t *testing.T, p *i2ctest.Playback) {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func recordTranscripts(t *testing.T) {
	chip := provisionedChip(0)
	ctx := context.Background()
	rec := func(fn func(*Device) error) []ioHex {
		r := &i2ctest.Record{Bus: chip}
		if err := fn(newTestDevice(r)); err != nil {
			t.Fatal(err)
		}
		return fromIO(r.Ops)
	}
	digest := sha256.Sum256([]byte("tributary"))
	pub, err := chip.keys[0].PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	tr := transcripts{
		PublicKey: pub,
		Digest:    digest[:],
		Info:      rec(func(d *Device) error { _, err := d.Info(ctx); return err }),
		GenKey:    rec(func(d *Device) error { _, err := d.PublicKey(ctx, 0); return err }),
		Sign:      rec(func(d *Device) error { _, err := d.SignDigest(ctx, 0, digest[:]); return err }),
	}
	raw, err := json.MarshalIndent(tr, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(transcriptFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(transcriptFile, append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSignFakeChip measures the driver's own cost per signature
// (packets, CRCs, verification) against the fake chip with no delays; a
// real ATECC608 adds 50-220 ms of execution per Sign.
func BenchmarkSignFakeChip(b *testing.B) {
	k, err := Open(context.Background(), newTestDevice(provisionedChip(0)), 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 200)
	for b.Loop() {
		if _, err := k.Sign(context.Background(), payload); err != nil {
			b.Fatal(err)
		}
	}
}
