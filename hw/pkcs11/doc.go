// Package pkcs11 keeps the gateway's signing key, non-extractable, on a
// PKCS#11 token: YubiHSM 2, NXP SE05x through NXP's module, SoftHSM2, or any
// token with EC keys on the needed curve.
//
// secp256k1 keys produce ECDSA_SECP256K1_EVM signatures: the token's raw
// r‖s over the EIP-191 digest is made low-S and given the recovery id
// (streamr.EVMSignatureFromRS). P-256 keys produce ECDSA_SECP256R1 (type 4)
// signatures over SHA-256.
//
// Keys are named by RFC 7512 URIs (ParseURI, pure Go). The token access
// itself uses github.com/miekg/pkcs11, which needs cgo, and is compiled only
// with the build tag "pkcs11"; crypto11 is not used because it has no
// secp256k1.
package pkcs11
