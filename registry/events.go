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
	c.metrics.events.Inc()
	if stream, user, ok := c.decodePermissionEvent(l); ok {
		c.Invalidate(stream, user)
		return
	}
	ev := c.abi.Events["StreamCreated"]
	if len(l.Topics) > 0 && l.Topics[0] == ev.ID {
		if vals, err := ev.Inputs.Unpack(l.Data); err == nil && len(vals) > 0 {
			stream, _ := vals[0].(string)
			c.Invalidate(stream, nil) // a negative entry may be cached
			return
		}
	}
	c.warnOnce("event", "undecodable StreamRegistry event", nil)
}

// Users lists the users that PermissionUpdated* events of blocks from
// fromBlock to the head name for stream, in the order first seen. The
// contract keeps no list of users: its events are the only record (the
// Streamr SDK reads them from an indexer).
func (c *Client) Users(ctx context.Context, stream string, fromBlock uint64) ([][]byte, error) {
	head, err := c.backend.BlockNumber(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: eth_blockNumber: %w", ErrUnreachable, err)
	}
	seen := map[string]bool{}
	var users [][]byte
	for from := fromBlock; from <= head; from += maxLogRange {
		logs, err := c.backend.FilterLogs(ctx, ethereum.FilterQuery{
			FromBlock: new(big.Int).SetUint64(from), ToBlock: new(big.Int).SetUint64(min(head, from+maxLogRange-1)),
			Addresses: []common.Address{c.contract},
			Topics:    [][]common.Hash{c.eventTopics()[:2]},
		})
		if err != nil {
			return nil, fmt.Errorf("%w: eth_getLogs from block %d: %w", ErrUnreachable, from, err)
		}
		for _, l := range logs {
			if s, user, ok := c.decodePermissionEvent(l); ok && s == stream && !seen[string(user)] {
				seen[string(user)] = true
				users = append(users, user)
			}
		}
	}
	return users, nil
}

// decodePermissionEvent returns the stream and user of a
// PermissionUpdated or PermissionUpdatedForUserId log.
func (c *Client) decodePermissionEvent(l types.Log) (string, []byte, bool) {
	for _, name := range []string{"PermissionUpdated", "PermissionUpdatedForUserId"} {
		ev := c.abi.Events[name]
		if len(l.Topics) == 0 || ev.ID != l.Topics[0] {
			continue
		}
		vals, err := ev.Inputs.Unpack(l.Data)
		if err != nil || len(vals) < 2 {
			return "", nil, false
		}
		stream, _ := vals[0].(string)
		switch u := vals[1].(type) {
		case common.Address:
			return stream, u.Bytes(), true
		case []byte:
			return stream, u, true
		}
	}
	return "", nil, false
}
