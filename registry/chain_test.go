package registry

import (
	"testing"

	"github.com/ethereum/go-ethereum/common"

	"github.com/tributary-iot/tributary/registry/registrytest"
	"github.com/tributary-iot/tributary/streamr"
)

// simChain is registrytest's simulated chain as these tests use it.
type simChain struct {
	backend  Backend
	contract common.Address
}

func newSimChain(t testing.TB, funded ...*streamr.EVMKey) *simChain {
	t.Helper()
	s := registrytest.NewSimulated(t, funded...)
	return &simChain{backend: s.Client, contract: s.Registry}
}

func loadArtifact(t testing.TB) registrytest.ArtifactJSON { return registrytest.Artifact(t) }

func newKey(t testing.TB) *streamr.EVMKey {
	t.Helper()
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustP256(t testing.TB) []byte {
	t.Helper()
	k, err := streamr.GenerateP256Key()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublisherID()
}
