package registrytest

import (
	"context"
	"math/big"
	"sync"
	"testing"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
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
	ctx := context.Background()
	code := hexutil.MustDecode(Artifact(t).Bytecode)
	from := common.Address(key.Address())
	b := s.Client
	chainID, err := b.ChainID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := b.PendingNonceAt(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	head, err := b.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gas, err := b.EstimateGas(ctx, ethereum.CallMsg{From: from, Data: code})
	if err != nil {
		t.Fatalf("estimate deployment: %v", err)
	}
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: chainID, Nonce: nonce, GasTipCap: big.NewInt(1e9),
		GasFeeCap: new(big.Int).Add(big.NewInt(1e9), new(big.Int).Mul(head.BaseFee, big.NewInt(2))), Gas: gas * 2, Data: code})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(chainID), key.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SendTransaction(ctx, signed); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		r, err := b.TransactionReceipt(ctx, signed.Hash())
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				t.Fatal("deployment reverted")
			}
			return r.ContractAddress
		}
		if ctx.Err() != nil {
			t.Fatalf("no receipt of the deployment: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
