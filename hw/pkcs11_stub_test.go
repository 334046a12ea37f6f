//go:build !(pkcs11 && cgo)

package hw

import (
	"context"
	"errors"
	"testing"
)

func TestPKCS11NotBuilt(t *testing.T) {
	_, err := Open(context.Background(), "pkcs11:token=gw?module-path=/x.so", Options{})
	if !errors.Is(err, ErrBackendNotBuilt) {
		t.Fatalf("Open(pkcs11:) error = %v, want ErrBackendNotBuilt", err)
	}
}
