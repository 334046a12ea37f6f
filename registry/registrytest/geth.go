// Package registrytest runs a real chain for tests: `geth --dev` (built
// from the Go module proxy by scripts/test.sh into a cache outside the
// checkout) with contracts/TestStreamRegistry deployed by geth's funded
// developer key.
package registrytest

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"syscall"
	"testing"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/tributary-iot/tributary/streamr"
)

// GethVersion is the go-ethereum release of go.mod, whose geth the tests run.
const GethVersion = "v1.17.10"

// DevKeyHex is geth --dev's fixed developer key (funded at genesis).
const DevKeyHex = "b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291"

// GethPath is $TRIBUTARY_GETH, else the cached build
// $TRIBUTARY_GETH_CACHE (/var/cache/tributary-geth)/<version>/geth. Without
// one the test is skipped, or fails when TRIBUTARY_REQUIRE_TOOLS is set.
func GethPath(t testing.TB) string {
	t.Helper()
	path := os.Getenv("TRIBUTARY_GETH")
	if path == "" {
		cache := os.Getenv("TRIBUTARY_GETH_CACHE")
		if cache == "" {
			cache = "/var/cache/tributary-geth"
		}
		path = filepath.Join(cache, GethVersion, "geth")
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("TRIBUTARY_REQUIRE_TOOLS") != "" {
			t.Fatalf("geth %s not found at %s (scripts/test.sh builds it)", GethVersion, path)
		}
		t.Skipf("geth not found at %s: GOBIN=%s go install github.com/ethereum/go-ethereum/cmd/geth@%s", path, filepath.Dir(path), GethVersion)
	}
	return path
}

// Chain is a running geth --dev with the test StreamRegistry.
type Chain struct {
	URL      string // JSON-RPC over HTTP
	Registry common.Address
	DevKey   *streamr.EVMKey
	cmd      *exec.Cmd
	exited   chan struct{}
}

var httpStarted = regexp.MustCompile(`HTTP server started\s+endpoint=(\S+)`)

// Start runs geth --dev (a block a second, so block.timestamp moves) in a
// temporary data directory and deploys the contract. Cleanup stops it.
func Start(t testing.TB) *Chain {
	t.Helper()
	bin := GethPath(t)
	cmd := exec.Command(bin, "--dev", "--dev.period", "1", "--http", "--http.addr", "127.0.0.1", "--http.port", "0",
		"--http.api", "eth,net,web3", "--ipcdisable", "--nodiscover", "--maxpeers", "0", "--port", "0", "--authrpc.port", "0",
		"--cache", "32", "--datadir", t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start geth: %v", err)
	}
	c := &Chain{cmd: cmd, exited: make(chan struct{})}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := httpStarted.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- "http://" + m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.Stop)
	select {
	case c.URL = <-urls:
	case <-c.exited:
		t.Fatal("geth exited before its HTTP server started")
	case <-time.After(60 * time.Second):
		t.Fatal("geth's HTTP server did not start within 60s")
	}
	if c.DevKey, err = DevKey(); err != nil {
		t.Fatal(err)
	}
	c.Registry = c.Deploy(t)
	return c
}

// DevKey is geth --dev's developer key.
func DevKey() (*streamr.EVMKey, error) {
	b, err := hex.DecodeString(DevKeyHex)
	if err != nil {
		return nil, err
	}
	return streamr.ParseEVMKey(b)
}

// Stop ends geth (the chain then is unreachable) and waits for it.
func (c *Chain) Stop() {
	if c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// Client dials the chain.
func (c *Chain) Client(t testing.TB) *ethclient.Client {
	t.Helper()
	ec, err := ethclient.Dial(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ec.Close)
	return ec
}

// Deploy deploys contracts/TestStreamRegistry.json with the developer key.
func (c *Chain) Deploy(t testing.TB) common.Address {
	t.Helper()
	code := hexutil.MustDecode(Artifact(t).Bytecode)
	rcpt := c.send(t, nil, code, nil)
	return rcpt.ContractAddress
}

// Fund sends wei from the developer key to addr.
func (c *Chain) Fund(t testing.TB, addr common.Address, wei *big.Int) {
	t.Helper()
	c.send(t, &addr, nil, wei)
}

func (c *Chain) send(t testing.TB, to *common.Address, data []byte, value *big.Int) *types.Receipt {
	t.Helper()
	return SendTx(t, c.Client(t), c.DevKey, to, data, value)
}

// TxBackend is what SendTx needs of a chain client.
type TxBackend interface {
	ethereum.ChainIDReader
	ethereum.PendingStateReader
	ethereum.GasEstimator
	ethereum.TransactionSender
	ethereum.TransactionReader
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
}

// SendTx sends a transaction signed by key (to nil: a contract creation)
// and waits for its successful receipt.
func SendTx(t testing.TB, b TxBackend, key *streamr.EVMKey, to *common.Address, data []byte, value *big.Int) *types.Receipt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
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
	gas, err := b.EstimateGas(ctx, ethereum.CallMsg{From: from, To: to, Data: data, Value: value})
	if err != nil {
		t.Fatalf("estimate gas: %v", err)
	}
	tip := big.NewInt(1e9)
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: chainID, Nonce: nonce, GasTipCap: tip,
		GasFeeCap: new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2))), Gas: gas * 2, To: to, Data: data, Value: value})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(chainID), key.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SendTransaction(ctx, signed); err != nil {
		t.Fatalf("send transaction: %v", err)
	}
	for {
		// geth may answer "transaction indexing is in progress" at first: retry.
		if r, err := b.TransactionReceipt(ctx, signed.Hash()); err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				t.Fatalf("transaction %s reverted", signed.Hash().Hex())
			}
			return r
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no receipt of %s within 60s", signed.Hash().Hex())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ArtifactJSON is contracts/TestStreamRegistry.json.
type ArtifactJSON struct {
	ABI      json.RawMessage `json:"abi"`
	Bytecode string          `json:"bytecode"`
}

// Artifact reads the compiled test contract from the repository.
func Artifact(t testing.TB) ArtifactJSON {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "contracts", "TestStreamRegistry.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var a ArtifactJSON
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return a
}

// String names the chain in logs.
func (c *Chain) String() string {
	return fmt.Sprintf("geth --dev at %s, StreamRegistry %s", c.URL, c.Registry.Hex())
}
