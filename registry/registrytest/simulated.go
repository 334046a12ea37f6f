package registrytest

import (
	"context"
	"math/big"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient/simulated"

	"github.com/tributary-iot/tributary/streamr"
)

// Simulated is go-ethereum's in-process simulated chain with the test
// StreamRegistry deployed by the first funded key. Its Client mines a
// block after every transaction it sends.
type Simulated struct {
	Client   *MinedClient
	Registry common.Address
	sim      *simulated.Backend
}

// MinedClient is the simulated backend's client; SendTransaction mines.
type MinedClient struct {
	simulated.Client
	sim *simulated.Backend
	mu  sync.Mutex
}

// SendTransaction sends tx and mines a block with it.
func (m *MinedClient) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.Client.SendTransaction(ctx, tx); err != nil {
		return err
	}
	m.sim.Commit()
	return nil
}

// NewSimulated starts a simulated chain funding keys (at least one).
func NewSimulated(t testing.TB, funded ...*streamr.EVMKey) *Simulated {
	t.Helper()
	alloc := types.GenesisAlloc{}
	for _, k := range funded {
		alloc[common.Address(k.Address())] = types.Account{Balance: new(big.Int).Lsh(big.NewInt(1), 100)}
	}
	sim := simulated.NewBackend(alloc)
	t.Cleanup(func() { _ = sim.Close() })
	s := &Simulated{sim: sim, Client: &MinedClient{Client: sim.Client(), sim: sim}}
	s.Registry = s.deploy(t, funded[0])
	return s
}

func (s *Simulated) deploy(t testing.TB, key *streamr.EVMKey) common.Address {
	t.Helper()
	return SendTx(t, s.Client, key, nil, hexutil.MustDecode(Artifact(t).Bytecode), nil).ContractAddress
}
