//go:build !(pkcs11 && cgo)

package hw

import (
	"context"
	"fmt"
)

// pkcs11Backend, in a build without the "pkcs11" tag or without cgo,
// refuses every pkcs11: URI.
type pkcs11Backend struct{}

func errNoPKCS11(uri string) error {
	return fmt.Errorf("%w: %q needs a binary built with cgo and -tags pkcs11", ErrBackendNotBuilt, uri)
}

func (pkcs11Backend) open(_ context.Context, uri string, _ Options) (Key, error) {
	return nil, errNoPKCS11(uri)
}

func (pkcs11Backend) create(_ context.Context, uri string, _ Options) (Key, error) {
	return nil, errNoPKCS11(uri)
}

func (pkcs11Backend) importKey(_ context.Context, uri string, _ []byte, _ Options) (Key, error) {
	return nil, errNoPKCS11(uri)
}
