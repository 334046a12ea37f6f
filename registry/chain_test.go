package registry

import (
	"context"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
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

// artifact is contracts/TestStreamRegistry.json, built by contracts/build.js.
type artifact struct {
	ABI      json.RawMessage `json:"abi"`
	Bytecode string          `json:"bytecode"`
}

func loadArtifact(t testing.TB) artifact {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "contracts", "TestStreamRegistry.json"))
	if err != nil {
		t.Fatal(err)
	}
	var a artifact
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("TestStreamRegistry.json: %v", err)
	}
	return a
}

// simChain is go-ethereum's simulated backend with the test contract
// deployed and funded keys; every sent transaction is mined at once.
type simChain struct {
	sim      *simulated.Backend
	backend  *minedBackend
	contract common.Address
}

// minedBackend mines a block after each transaction it sends.
type minedBackend struct {
	simulated.Client
	sim *simulated.Backend
	mu  sync.Mutex
}

func (m *minedBackend) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.Client.SendTransaction(ctx, tx); err != nil {
		return err
	}
	m.sim.Commit()
	return nil
}

func newSimChain(t testing.TB, funded ...*streamr.EVMKey) *simChain {
	t.Helper()
	alloc := types.GenesisAlloc{}
	for _, k := range funded {
		alloc[common.Address(k.Address())] = types.Account{Balance: new(big.Int).Lsh(big.NewInt(1), 100)}
	}
	sim := simulated.NewBackend(alloc)
	t.Cleanup(func() { _ = sim.Close() })
	c := &simChain{sim: sim, backend: &minedBackend{Client: sim.Client(), sim: sim}}
	c.contract = deploy(t, c.backend, funded[0])
	return c
}

// deploy sends the test contract's creation transaction signed by key.
func deploy(t testing.TB, b Backend, key *streamr.EVMKey) common.Address {
	t.Helper()
	ctx := context.Background()
	code := hexutil.MustDecode(loadArtifact(t).Bytecode)
	from := common.Address(key.Address())
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
	rcpt := waitMined(t, b, signed.Hash())
	if rcpt.Status != types.ReceiptStatusSuccessful {
		t.Fatalf("deployment reverted")
	}
	return rcpt.ContractAddress
}

func waitMined(t testing.TB, b Backend, h common.Hash) *types.Receipt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		r, err := b.TransactionReceipt(ctx, h)
		if err == nil {
			return r
		}
		if ctx.Err() != nil {
			t.Fatalf("no receipt of %s: %v", h.Hex(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

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
