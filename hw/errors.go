package hw

import "errors"

// Errors shared by all backends; test them with errors.Is.
var (
	// ErrKeyExists reports that Create or Import would replace a key.
	ErrKeyExists = errors.New("key already exists")
	// ErrNoKey reports that Open found no key at the URI.
	ErrNoKey = errors.New("no key at this URI")
	// ErrImportUnsupported reports a backend that cannot take an existing
	// private key (its keys are generated inside the hardware).
	ErrImportUnsupported = errors.New("backend cannot import a private key")
	// ErrBackendNotBuilt reports a URI scheme whose backend is not compiled
	// into this binary (pkcs11 without the build tag).
	ErrBackendNotBuilt = errors.New("key backend not built into this binary")
	// ErrBadURI reports a key URI that cannot be parsed or names an unknown scheme.
	ErrBadURI = errors.New("bad key URI")
	// ErrPassphrase reports a missing, empty or wrong passphrase.
	ErrPassphrase = errors.New("passphrase problem")
)
