//go:build pkcs11 && cgo

package main

import (
	"testing"

	"github.com/tributary-iot/tributary/hw/simtest"
)

// TestSealedGroupKeysPKCS11: a key on a SoftHSM2 token seals the data key
// with an AES key on the token. scripts/test.sh runs it with -tags pkcs11
// (the bridges under test are then built with the tag too).
func TestSealedGroupKeysPKCS11(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real bridges and SoftHSM2")
	}
	h := simtest.StartSoftHSM(t, "gw")
	testSealedGroupKeys(t, sealingBackend{
		uri:       "pkcs11:token=gw;object=gateway?module-path=" + h.Module + "&pin-value=" + h.PIN,
		where:     `pkcs11 token "gw"`,
		replace:   func() { simtest.StartSoftHSM(t, "gw") }, // a new token, same label
		keyErrHas: []string{"pkcs11:token=gw", `PKCS#11 key "gateway" on token "gw"`},
	})
}

func init() { bridgeBuildFlags = []string{"-tags", "pkcs11"} }
