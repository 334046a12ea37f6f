package ecc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
)

// DefaultAddr is the chip's factory 7-bit I2C address (CryptoAuthLib's
// 8-bit 0xC0).
const DefaultAddr = 0x60

// Timing from the ATECC608 datasheet (default clock divider).
const (
	wakeDelay    = 1500 * time.Microsecond // tWHI: wake pulse to first command
	pollInterval = 2 * time.Millisecond
)

// maxExec is each opcode's maximum execution time; the chip NACKs reads
// until it is done.
var maxExec = map[byte]time.Duration{
	opRead:   5 * time.Millisecond,
	opWrite:  45 * time.Millisecond,
	opNonce:  20 * time.Millisecond,
	opLock:   35 * time.Millisecond,
	opInfo:   5 * time.Millisecond,
	opGenKey: 215 * time.Millisecond,
	opSign:   220 * time.Millisecond,
}

// ErrNoWake reports a chip that never answered the wake sequence.
var ErrNoWake = errors.New("ATECC did not wake (wrong bus or address, or no chip)")

// Options tunes the driver; the zero value is the factory configuration.
type Options struct {
	Addr     uint16       // 7-bit I2C address; if 0, DefaultAddr
	Attempts int          // tries of a whole wake/command sequence; if 0, 3
	Logger   *slog.Logger // if nil, logs are discarded

	// Sleep waits d or until ctx ends. If nil, a timer is used. Tests
	// replace it to run without real delays.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Device is one ATECC608 on an I2C bus. Its methods are safe for
// concurrent use; each runs one wake-to-idle session.
type Device struct {
	mu       sync.Mutex
	bus      i2c.Bus
	addr     uint16
	attempts int
	sleep    func(context.Context, time.Duration) error
	log      *slog.Logger
}

// New returns a driver for the chip at opts.Addr on bus. It does not touch
// the bus.
func New(bus i2c.Bus, opts Options) *Device {
	d := &Device{bus: bus, addr: opts.Addr, attempts: opts.Attempts, sleep: opts.Sleep, log: opts.Logger}
	if d.addr == 0 {
		d.addr = DefaultAddr
	}
	if d.attempts <= 0 {
		d.attempts = 3
	}
	if d.sleep == nil {
		d.sleep = sleepCtx
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// session runs fn between a wake and an idle, repeating the whole
// sequence on retryable errors. The chip's TempKey survives idle but not
// sleep or the watchdog, so Nonce and Sign must share one session.
func (d *Device) session(ctx context.Context, fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	for attempt := 1; attempt <= d.attempts; attempt++ {
		if err = d.wake(ctx); err == nil {
			err = fn()
		}
		d.idle() // also after a failed wake: a chip that was already awake must idle before it can wake again
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		d.log.Debug("atecc sequence failed, retrying", "attempt", attempt, "err", err)
	}
	return err
}

func retryable(err error) bool {
	var st StatusError
	if errors.As(err, &st) {
		return st.retryable()
	}
	var bus busError
	return errors.Is(err, ErrCRC) || errors.As(err, &bus) || errors.Is(err, ErrNoWake)
}

// busError is an I2C transfer failure other than an expected busy NACK.
type busError struct{ err error }

func (e busError) Error() string { return "ATECC I2C transfer: " + e.err.Error() }
func (e busError) Unwrap() error { return e.err }

// wake holds SDA low by addressing the general-call address 0 (the
// transfer itself fails: nobody acknowledges) and checks the wake answer.
func (d *Device) wake(ctx context.Context) error {
	_ = d.bus.Tx(0x00, []byte{0x00}, nil)
	if err := d.sleep(ctx, wakeDelay); err != nil {
		return err
	}
	rsp := make([]byte, len(wakeResponse))
	if err := d.bus.Tx(d.addr, nil, rsp); err != nil {
		return fmt.Errorf("%w: %w", ErrNoWake, err)
	}
	if string(rsp) != string(wakeResponse) {
		return fmt.Errorf("%w: answer % x, want % x", ErrNoWake, rsp, wakeResponse)
	}
	return nil
}

// idle puts the chip in idle mode: low power, TempKey kept.
func (d *Device) idle() {
	if err := d.bus.Tx(d.addr, []byte{wordIdle}, nil); err != nil {
		d.log.Debug("atecc idle failed; the watchdog will put the chip to sleep", "err", err)
	}
}

// Sleep puts the chip in its lowest-power state, clearing TempKey.
func (d *Device) Sleep() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.bus.Tx(d.addr, []byte{wordSleep}, nil); err != nil {
		return busError{err}
	}
	return nil
}

// exec sends one command and reads its want-byte result, polling while the
// chip NACKs during execution.
func (d *Device) exec(ctx context.Context, c command, want int) ([]byte, error) {
	if err := d.bus.Tx(d.addr, c.packet(), nil); err != nil {
		return nil, busError{fmt.Errorf("send opcode 0x%02X: %w", c.op, err)}
	}
	deadline := maxExec[c.op] + 10*time.Millisecond
	var count [1]byte
	for waited := time.Duration(0); ; waited += pollInterval {
		if err := d.sleep(ctx, pollInterval); err != nil {
			return nil, err
		}
		err := d.bus.Tx(d.addr, nil, count[:])
		if err == nil {
			break
		}
		if waited >= deadline {
			return nil, busError{fmt.Errorf("opcode 0x%02X still busy after %v: %w", c.op, deadline, err)}
		}
	}
	if count[0] < 4 || count[0] > 3+64+32 {
		return nil, fmt.Errorf("opcode 0x%02X: response count %d: %w", c.op, count[0], ErrCRC)
	}
	rsp := make([]byte, count[0])
	rsp[0] = count[0]
	if err := d.bus.Tx(d.addr, nil, rsp[1:]); err != nil {
		return nil, busError{fmt.Errorf("read opcode 0x%02X response: %w", c.op, err)}
	}
	data, err := parseResponse(rsp, want)
	if err != nil {
		return nil, fmt.Errorf("opcode 0x%02X: %w", c.op, err)
	}
	return data, nil
}

// Info returns the chip revision (Info mode 0), e.g. 00 00 60 02 for an
// ATECC608A and 00 00 60 03 for an ATECC608B.
func (d *Device) Info(ctx context.Context) ([4]byte, error) {
	var rev [4]byte
	err := d.session(ctx, func() error {
		data, err := d.exec(ctx, command{op: opInfo}, 4)
		copy(rev[:], data)
		return err
	})
	return rev, err
}

// GenKey modes.
const (
	genKeyPublic = 0x00 // compute the public key of the slot's private key
	genKeyCreate = 0x04 // generate a new random private key in the slot
)

// PublicKey returns the public key of the private key in slot.
func (d *Device) PublicKey(ctx context.Context, slot int) (*ecdsa.PublicKey, error) {
	return d.genKey(ctx, slot, genKeyPublic)
}

// GenerateKey replaces the private key in slot with a new random one
// generated inside the chip and returns its public key.
func (d *Device) GenerateKey(ctx context.Context, slot int) (*ecdsa.PublicKey, error) {
	return d.genKey(ctx, slot, genKeyCreate)
}

func (d *Device) genKey(ctx context.Context, slot int, mode byte) (*ecdsa.PublicKey, error) {
	if err := checkSlot(slot); err != nil {
		return nil, err
	}
	var xy []byte
	err := d.session(ctx, func() error {
		var err error
		xy, err = d.exec(ctx, command{op: opGenKey, p1: mode, p2: uint16(slot)}, 64)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ATECC GenKey slot %d: %w", slot, err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, xy...))
	if err != nil {
		return nil, fmt.Errorf("ATECC GenKey slot %d: public key: %w", slot, err)
	}
	return pub, nil
}

// SignDigest signs a 32-byte digest with the P-256 key in slot and returns
// r‖s: Nonce in pass-through mode loads the digest into TempKey, then
// Sign in external-message mode signs it.
func (d *Device) SignDigest(ctx context.Context, slot int, digest []byte) ([]byte, error) {
	if err := checkSlot(slot); err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("ATECC sign: digest is %d bytes, want 32", len(digest))
	}
	var sig []byte
	err := d.session(ctx, func() error {
		if _, err := d.exec(ctx, command{op: opNonce, p1: 0x03, data: digest}, 1); err != nil {
			return fmt.Errorf("nonce: %w", err)
		}
		var err error
		sig, err = d.exec(ctx, command{op: opSign, p1: 0x80, p2: uint16(slot)}, 64)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ATECC sign with slot %d: %w", slot, err)
	}
	return sig, nil
}

func checkSlot(slot int) error {
	if slot < 0 || slot > 15 {
		return fmt.Errorf("ATECC slot %d: want 0-15", slot)
	}
	return nil
}
