// Package tpm keeps the gateway's signing key in a TPM 2.0, in one of two
// ways:
//
//   - Secp256k1: TPMs have no secp256k1 curve, so an Ethereum key is sealed
//     to the TPM (a KEYEDHASH object under the storage root key, optionally
//     bound to the current values of chosen SHA-256 PCRs) and unsealed into
//     memory at start. A copied SD card holds only a blob that no other TPM
//     can open.
//   - P256: a NIST P-256 key generated inside the TPM that never leaves it;
//     every message is signed by TPM2_Sign and carries an ECDSA_SECP256R1
//     signature (Streamr signature type 4).
//
// Both keep their TPM-wrapped key in a blob file. The storage root key is the
// TCG reference ECC SRK, re-derived from the owner seed at each start, so
// nothing is written to TPM NV memory.
//
// The package is pure Go (go-tpm). It reaches the TPM through a device file
// (/dev/tpmrm0, the kernel resource manager, on devices), a unix socket, or a
// TCP address of a simulator speaking raw TPM command frames (swtpm
// --server type=tcp or type=unixio).
package tpm
