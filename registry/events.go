package registry

import (
	"context"
	"fmt"
	"math/big"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// maxLogRange bounds the blocks one eth_getLogs asks for: public RPCs
// refuse wide ranges.
const maxLogRange = 2000

// Run polls the contract's events until ctx ends, dropping the cached
// answers that PermissionUpdated, PermissionUpdatedForUserId and
// StreamCreated change, so a revocation takes effect within a poll
// interval instead of the TTL. An RPC without eth_getLogs leaves the TTL
// alone in charge (logged once). It returns nil when ctx ends.
func (c *Client) Run(ctx context.Context) error {
	if c.cfg.PollInterval < 0 {
		<-ctx.Done()
		return nil
	}
	var next uint64 // first block not yet read; 0: start at the head
	ticker := time.NewTicker(c.cfg.PollInterval)
	defer ticker.Stop()
	for {
		n, err := c.poll(ctx, next)
		if err != nil && ctx.Err() == nil {
			c.warnOnce("poll", "polling StreamRegistry events failed: cached permissions change only when cache_ttl passes", err)
		} else {
			next = n
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// poll reads the events of blocks from..head and returns head+1. With
// from 0 it only learns the head.
func (c *Client) poll(ctx context.Context, from uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	head, err := c.backend.BlockNumber(ctx)
	if err != nil {
		return from, fmt.Errorf("eth_blockNumber: %w", err)
	}
	if from == 0 || from > head+1 {
		return head + 1, nil
	}
	for from <= head {
		to := min(head, from+maxLogRange-1)
		logs, err := c.backend.FilterLogs(ctx, ethereum.FilterQuery{
			FromBlock: new(big.Int).SetUint64(from), ToBlock: new(big.Int).SetUint64(to),
			Addresses: []common.Address{c.contract},
			Topics:    [][]common.Hash{c.eventTopics()},
		})
		if err != nil {
			return from, fmt.Errorf("eth_getLogs %d-%d: %w", from, to, err)
		}
		for _, l := range logs {
			c.apply(l)
		}
		from = to + 1
	}
	return from, nil
}

func (c *Client) eventTopics() []common.Hash {
	return []common.Hash{
		c.abi.Events["PermissionUpdated"].ID,
		c.abi.Events["PermissionUpdatedForUserId"].ID,
		c.abi.Events["StreamCreated"].ID,
	}
}

// apply invalidates what one event changed.
func (c *Client) apply(l types.Log) {
	if len(l.Topics) == 0 {
		return
	}
	c.metrics.events.Inc()
	for name, ev := range c.abi.Events {
		if ev.ID != l.Topics[0] {
			continue
		}
		vals, err := ev.Inputs.Unpack(l.Data)
		if err != nil || len(vals) < 2 {
			c.warnOnce("event", "undecodable StreamRegistry event "+name, err)
			return
		}
		stream, _ := vals[0].(string)
		switch user := vals[1].(type) {
		case common.Address:
			c.Invalidate(stream, user.Bytes())
		case []byte:
			c.Invalidate(stream, user)
		default: // StreamCreated: a negative entry may be cached
			c.Invalidate(stream, nil)
		}
		return
	}
}
