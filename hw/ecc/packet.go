package ecc

import (
	"errors"
	"fmt"
)

// Word-address bytes: the first byte of every write.
const (
	wordReset   = 0x00
	wordSleep   = 0x01
	wordIdle    = 0x02
	wordCommand = 0x03
)

// Opcodes.
const (
	opRead   = 0x02
	opWrite  = 0x12
	opNonce  = 0x16
	opLock   = 0x17
	opInfo   = 0x30
	opGenKey = 0x40
	opSign   = 0x41
)

// wakeResponse is what the chip answers after waking: count 4, status
// 0x11 ("after wake"), CRC.
var wakeResponse = []byte{0x04, 0x11, 0x33, 0x43}

// crc16 is the chip's CRC: polynomial 0x8005, initial 0, data bits taken
// LSB first, no final XOR.
func crc16(data []byte) uint16 {
	var crc uint16
	for _, b := range data {
		for bit := range 8 {
			dataBit := uint16(b>>bit) & 1
			crcBit := crc >> 15
			crc <<= 1
			if dataBit != crcBit {
				crc ^= 0x8005
			}
		}
	}
	return crc
}

// command is one command packet.
type command struct {
	op   byte
	p1   byte
	p2   uint16
	data []byte
}

// packet encodes the command with its word address, count and CRC.
func (c command) packet() []byte {
	n := 7 + len(c.data)
	pkt := make([]byte, 0, n+1)
	pkt = append(pkt, wordCommand, byte(n), c.op, c.p1, byte(c.p2), byte(c.p2>>8))
	pkt = append(pkt, c.data...)
	crc := crc16(pkt[1:])
	return append(pkt, byte(crc), byte(crc>>8))
}

// StatusError is a status byte the chip returned instead of a result.
type StatusError byte

// Status codes of the ATECC608.
const (
	StatusMiscompare    StatusError = 0x01
	StatusParse         StatusError = 0x03
	StatusECCFault      StatusError = 0x05
	StatusSelfTest      StatusError = 0x07
	StatusHealthTest    StatusError = 0x08
	StatusExecution     StatusError = 0x0F
	StatusAfterWake     StatusError = 0x11
	StatusWatchdog      StatusError = 0xEE
	StatusCommunication StatusError = 0xFF
)

func (s StatusError) Error() string {
	switch s {
	case StatusMiscompare:
		return "ATECC status 0x01: miscompare"
	case StatusParse:
		return "ATECC status 0x03: parse error (bad opcode or parameters)"
	case StatusECCFault:
		return "ATECC status 0x05: ECC fault"
	case StatusSelfTest:
		return "ATECC status 0x07: self-test error"
	case StatusHealthTest:
		return "ATECC status 0x08: health test error"
	case StatusExecution:
		return "ATECC status 0x0F: execution error (slot or zone configuration forbids the command?)"
	case StatusAfterWake:
		return "ATECC status 0x11: chip just woke up"
	case StatusWatchdog:
		return "ATECC status 0xEE: watchdog about to expire"
	case StatusCommunication:
		return "ATECC status 0xFF: the chip saw a CRC or communication error"
	}
	return fmt.Sprintf("ATECC status 0x%02X", byte(s))
}

// retryable reports whether the whole wake/command sequence may succeed if
// repeated: communication trouble, not a refusal.
func (s StatusError) retryable() bool {
	return s == StatusCommunication || s == StatusWatchdog || s == StatusAfterWake || s == StatusECCFault
}

// ErrCRC reports a response whose CRC does not match (bus noise).
var ErrCRC = errors.New("ATECC response CRC mismatch")

// parseResponse checks a whole response (count, data, CRC) and returns the
// data, which must be want bytes long. A 4-byte packet carries a status.
func parseResponse(rsp []byte, want int) ([]byte, error) {
	if len(rsp) < 4 || int(rsp[0]) != len(rsp) {
		return nil, fmt.Errorf("ATECC response of %d bytes with count %d: %w", len(rsp), first(rsp), ErrCRC)
	}
	n := len(rsp)
	if crc := crc16(rsp[:n-2]); byte(crc) != rsp[n-2] || byte(crc>>8) != rsp[n-1] {
		return nil, ErrCRC
	}
	data := rsp[1 : n-2]
	if len(data) == 1 && want != 1 {
		return nil, StatusError(data[0])
	}
	if want == 1 && data[0] != 0 {
		return nil, StatusError(data[0])
	}
	if len(data) != want {
		return nil, fmt.Errorf("ATECC response carries %d bytes, want %d", len(data), want)
	}
	return data, nil
}

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}
