// Package ecc drives a Microchip ATECC608A/B secure element over I2C
// (periph.io) and signs ECDSA_SECP256R1 (Streamr type 4) messages with a
// P-256 private key that never leaves a slot of the chip.
//
// The chip sleeps between operations: each operation wakes it (SDA held low
// by a write to address 0), sends command packets "03 count opcode p1 p2
// data CRC-16", polls while the chip NACKs during execution, reads and
// CRC-checks the response, and puts the chip in idle. A signature is
// Nonce (pass-through digest into TempKey) then Sign within one wake
// period; communication errors, CRC errors and watchdog expiry restart the
// whole sequence, a bounded number of times.
//
// Provision writes and locks the configuration and data zones. It cannot
// be undone, so it takes a confirmation callback and refuses a chip whose
// configuration is already locked.
package ecc
