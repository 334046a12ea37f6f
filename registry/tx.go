package registry

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// TxSigner signs Ethereum transactions: a secp256k1 key that signs a
// 32-byte digest as r‖s‖v (v 0 or 1, or 27/28).
type TxSigner interface {
	PublisherID() []byte // the 20-byte address
	SignDigest(ctx context.Context, digest []byte) ([]byte, error)
}

// Transaction errors, with the contract's reasons behind them.
var (
	ErrNotPermitted  = errors.New("the sender lacks the permission this change needs (error_noSharePermission)")
	ErrStreamExists  = errors.New("stream already exists")
	ErrNoFunds       = errors.New("insufficient funds for gas")
	ErrReverted      = errors.New("transaction reverted")
	ErrNotSecp256k1  = errors.New("transactions need a secp256k1 key (file key or PKCS#11 secp256k1 key)")
	errReceiptNotYet = errors.New("no receipt yet")
)

// receiptPoll is how often Transact asks for the receipt.
const receiptPoll = 250 * time.Millisecond

// Transact sends method(args...) to the contract signed by key and waits
// for its receipt until ctx ends. Chain ID, nonce, gas limit and fees come
// from the RPC; a call that would revert fails before anything is sent,
// with the contract's reason.
func (c *Client) Transact(ctx context.Context, key TxSigner, method string, args ...any) (*types.Receipt, error) {
	from, err := senderOf(key)
	if err != nil {
		return nil, err
	}
	data, err := c.abi.Pack(method, args...)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	tx, err := c.buildTx(ctx, from, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	signed, err := c.sign(ctx, key, tx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	if err := c.backend.SendTransaction(ctx, signed); err != nil {
		return nil, fmt.Errorf("%s: send: %w", method, classify(err))
	}
	rcpt, err := c.waitReceipt(ctx, signed.Hash())
	if err != nil {
		return nil, fmt.Errorf("%s: transaction %s: %w", method, signed.Hash().Hex(), err)
	}
	if rcpt.Status != types.ReceiptStatusSuccessful {
		return rcpt, fmt.Errorf("%s: transaction %s in block %d: %w", method, signed.Hash().Hex(), rcpt.BlockNumber, ErrReverted)
	}
	return rcpt, nil
}

func senderOf(key TxSigner) (common.Address, error) {
	id := key.PublisherID()
	if len(id) != common.AddressLength {
		return common.Address{}, ErrNotSecp256k1
	}
	return common.BytesToAddress(id), nil
}

// buildTx fills an EIP-1559 transaction from the RPC's answers.
func (c *Client) buildTx(ctx context.Context, from common.Address, data []byte) (*types.Transaction, error) {
	to := c.contract
	chainID, err := c.backend.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: eth_chainId: %w", ErrUnreachable, err)
	}
	gas, err := c.backend.EstimateGas(ctx, ethereum.CallMsg{From: from, To: &to, Data: data})
	if err != nil {
		return nil, fmt.Errorf("estimate gas: %w", classify(err))
	}
	tip, err := c.backend.SuggestGasTipCap(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: eth_maxPriorityFeePerGas: %w", ErrUnreachable, err)
	}
	head, err := c.backend.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: latest block: %w", ErrUnreachable, err)
	}
	feeCap := new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2)))
	gas += gas / 5 // estimates are exact for the state they ran on; leave room for a block's change
	if err := c.checkFunds(ctx, from, gas, feeCap); err != nil {
		return nil, err
	}
	nonce, err := c.backend.PendingNonceAt(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("%w: nonce: %w", ErrUnreachable, err)
	}
	return types.NewTx(&types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas, To: &to, Data: data,
	}), nil
}

func (c *Client) checkFunds(ctx context.Context, from common.Address, gas uint64, feeCap *big.Int) error {
	bal, err := c.backend.BalanceAt(ctx, from, nil)
	if err != nil {
		return fmt.Errorf("%w: balance: %w", ErrUnreachable, err)
	}
	need := new(big.Int).Mul(new(big.Int).SetUint64(gas), feeCap)
	if bal.Cmp(need) < 0 {
		return fmt.Errorf("%w: %s holds %s wei, the transaction may cost up to %s wei", ErrNoFunds, from.Hex(), bal, need)
	}
	return nil
}

func (c *Client) sign(ctx context.Context, key TxSigner, tx *types.Transaction) (*types.Transaction, error) {
	signer := types.LatestSignerForChainID(tx.ChainId())
	sig, err := key.SignDigest(ctx, signer.Hash(tx).Bytes())
	if err != nil {
		return nil, fmt.Errorf("sign transaction: %w", err)
	}
	if len(sig) == 65 && sig[64] >= 27 {
		sig = append(sig[:64:64], sig[64]-27)
	}
	signed, err := tx.WithSignature(signer, sig)
	if err != nil {
		return nil, fmt.Errorf("sign transaction: %w", err)
	}
	return signed, nil
}

// waitReceipt polls for the receipt, retrying the RPC's transient
// answers (not found yet, geth's "transaction indexing is in progress").
func (c *Client) waitReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error) {
	ticker := time.NewTicker(receiptPoll)
	defer ticker.Stop()
	var last error
	for {
		rcpt, err := c.backend.TransactionReceipt(ctx, hash)
		if err == nil {
			return rcpt, nil
		}
		last = err
		if errors.Is(err, ethereum.NotFound) {
			last = errReceiptNotYet
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no receipt before %w (last answer: %w)", ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// classify maps a failed estimate or send onto the package's errors.
func classify(err error) error {
	if reason, ok := revertReason(err); ok {
		switch reason {
		case "error_noSharePermission", "error_noEditPermission":
			return fmt.Errorf("%w: %s", ErrNotPermitted, reason)
		case "error_streamDoesNotExist":
			return ErrStreamNotFound
		case "error_streamAlreadyExists":
			return ErrStreamExists
		}
		return fmt.Errorf("%w: %s", ErrReverted, reason)
	}
	if strings.Contains(err.Error(), "insufficient funds") {
		return fmt.Errorf("%w: %w", ErrNoFunds, err)
	}
	if strings.Contains(err.Error(), "execution reverted") {
		return fmt.Errorf("%w: %w", ErrReverted, err)
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// AddressOf is a 20-byte user ID as the address argument of a transaction.
func AddressOf(b []byte) common.Address { return common.BytesToAddress(b) }
