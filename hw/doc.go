// Package hw keeps the gateway's signing key behind the streamr.Signer
// interface, in hardware wherever the device has hardware for it.
//
// A key URI in the configuration chooses the backend:
//
//	file:///var/lib/tributary/key                 software key file (default)
//	tpm:///dev/tpmrm0?type=sealed&blob=key.tpm    secp256k1 key sealed to a TPM
//	tpm:///dev/tpmrm0?type=p256&blob=key.tpm      P-256 key that never leaves the TPM
//	pkcs11:token=gw;object=tributary?module-path=/usr/lib/softhsm/libsofthsm2.so
//	ecc://i2c-1:96?slot=0                         ATECC608 secure element on I2C bus 1, address 0x60
//
// Dispatch on the scheme happens in Open, Create and Import; there is no
// global registry. The pkcs11 backend needs cgo and is compiled in only with
// the build tag "pkcs11"; without it a pkcs11: URI is refused with
// ErrBackendNotBuilt.
//
// Keys whose backend can protect other secrets at rest implement Sealer:
// the TPM keys (a sealed data object under the storage root key), PKCS#11
// keys (AES-256-GCM on the token under a non-extractable AES key) and
// passphrase-encrypted key files (the keystore's scrypt). OpenDataKey
// keeps the gateway's data key in a file sealed by that backend, or,
// for plain key files and ATECC608, stored as it is (mode 0600).
package hw
