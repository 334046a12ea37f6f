package ecc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/physic"
)

var errNACK = errors.New("fake i2c: address not acknowledged")

// fakeChip is a behavioural ATECC608 on a fake i2c.Bus: it checks command
// CRCs, NACKs while asleep and while busy, and runs Info, Read, Write,
// Lock, GenKey, Nonce and Sign with real P-256 keys.
type fakeChip struct {
	mu sync.Mutex

	addr       uint16
	awake      bool
	neverWakes bool
	busyPolls  int // NACK this many reads after each command
	corrupt    int // corrupt the CRC of this many next responses
	badWake    int // answer this many wakes with a wrong wake response

	busyLeft int
	out      []byte // output buffer, read sequentially
	tempKey  []byte
	config   [configSize]byte
	keys     [16]*ecdsa.PrivateKey
	commands []byte // opcodes executed, in order
}

func newFakeChip() *fakeChip {
	c := &fakeChip{addr: DefaultAddr}
	copy(c.config[0:4], []byte{0x01, 0x23, 0xaa, 0xbb})
	copy(c.config[8:13], []byte{0xcc, 0xdd, 0xee, 0xff, 0xee})
	c.config[lockValueOffset] = unlocked
	c.config[lockConfigOffset] = unlocked
	return c
}

// provisioned returns a chip whose zones are locked and whose slot holds a key.
func provisionedChip(slot int) *fakeChip {
	c := newFakeChip()
	c.config[lockValueOffset], c.config[lockConfigOffset] = 0, 0
	c.keys[slot] = mustKey()
	return c
}

func mustKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func (c *fakeChip) String() string                  { return "fake-atecc608" }
func (c *fakeChip) SetSpeed(physic.Frequency) error { return nil }

func (c *fakeChip) Tx(addr uint16, w, r []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr == 0 {
		if !c.neverWakes {
			c.wake()
		}
		return nil // a real bus may NACK here; the driver ignores it
	}
	if addr != c.addr || !c.awake {
		return errNACK
	}
	if len(w) > 0 {
		c.write(w)
	}
	if len(r) > 0 {
		if c.busyLeft > 0 {
			c.busyLeft--
			return errNACK
		}
		if len(c.out) < len(r) {
			return fmt.Errorf("fake i2c: read %d bytes, %d buffered", len(r), len(c.out))
		}
		copy(r, c.out)
		c.out = c.out[len(r):]
	}
	return nil
}

func (c *fakeChip) wake() {
	if c.awake {
		return
	}
	c.awake = true
	c.out = append([]byte(nil), wakeResponse...)
	if c.badWake > 0 {
		c.badWake--
		c.out[1] = 0x00
	}
}

func (c *fakeChip) write(w []byte) {
	switch w[0] {
	case wordSleep:
		c.awake, c.tempKey, c.busyLeft = false, nil, 0
	case wordIdle:
		c.awake, c.busyLeft = false, 0 // TempKey survives idle
	case wordCommand:
		c.command(w[1:])
	}
}

func (c *fakeChip) command(pkt []byte) {
	c.busyLeft = c.busyPolls
	n := len(pkt)
	if n < 7 || int(pkt[0]) != n || crc16(pkt[:n-2]) != uint16(pkt[n-2])|uint16(pkt[n-1])<<8 {
		c.respond([]byte{byte(StatusCommunication)})
		return
	}
	op, p1, p2, data := pkt[1], pkt[2], int(pkt[3])|int(pkt[4])<<8, pkt[5:n-2]
	c.commands = append(c.commands, op)
	rsp, status := c.run(op, p1, p2, data)
	if status != 0 || rsp == nil {
		rsp = []byte{status}
	}
	c.respond(rsp)
}

func (c *fakeChip) run(op, p1 byte, p2 int, data []byte) ([]byte, byte) {
	configLocked := c.config[lockConfigOffset] != unlocked
	switch {
	case op == opInfo && p1 == 0:
		return []byte{0x00, 0x00, 0x60, 0x02}, 0
	case op == opRead && p1 == 0x80 && p2%8 == 0 && p2 < 32:
		return append([]byte(nil), c.config[p2*4:p2*4+32]...), 0
	case op == opRead && p1 == 0x00 && p2 < 32:
		return append([]byte(nil), c.config[p2*4:p2*4+4]...), 0
	case op == opWrite && p1 == 0x00 && len(data) == 4:
		if configLocked || p2 < 4 {
			return nil, byte(StatusExecution)
		}
		copy(c.config[p2*4:], data)
		return nil, 0
	case op == opLock && p1 == lockModeConfigCRC:
		if configLocked || crc16(c.config[:]) != uint16(p2) {
			return nil, byte(StatusExecution)
		}
		c.config[lockConfigOffset] = 0
		return nil, 0
	case op == opLock && p1 == lockModeDataNoCRC:
		if !configLocked || c.config[lockValueOffset] != unlocked {
			return nil, byte(StatusExecution)
		}
		c.config[lockValueOffset] = 0
		return nil, 0
	case op == opGenKey && p2 < 16:
		return c.genKey(p1, p2, configLocked)
	case op == opNonce && p1 == 0x03 && len(data) == 32:
		c.tempKey = append([]byte(nil), data...)
		return nil, 0
	case op == opSign && p1 == 0x80 && p2 < 16:
		return c.sign(p2)
	}
	return nil, byte(StatusParse)
}

func (c *fakeChip) genKey(mode byte, slot int, configLocked bool) ([]byte, byte) {
	switch {
	case mode == genKeyCreate && configLocked:
		c.keys[slot] = mustKey()
	case mode == genKeyPublic && c.keys[slot] != nil:
	default:
		return nil, byte(StatusExecution)
	}
	raw, err := c.keys[slot].PublicKey.Bytes()
	if err != nil {
		panic(err)
	}
	return raw[1:], 0
}

func (c *fakeChip) sign(slot int) ([]byte, byte) {
	if c.tempKey == nil || c.keys[slot] == nil {
		return nil, byte(StatusExecution)
	}
	r, s, err := ecdsa.Sign(rand.Reader, c.keys[slot], c.tempKey)
	if err != nil {
		panic(err)
	}
	c.tempKey = nil
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, 0
}

func (c *fakeChip) respond(data []byte) {
	rsp := append([]byte{byte(len(data) + 3)}, data...)
	crc := crc16(rsp)
	rsp = append(rsp, byte(crc), byte(crc>>8))
	if c.corrupt > 0 {
		c.corrupt--
		rsp[len(rsp)-1] ^= 0x5a
	}
	c.out = rsp
}
