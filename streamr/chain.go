package streamr

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
)

const (
	chainIDLen      = 20
	chainIDAlphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

// NewChainID returns a random message chain ID like the SDK's
// createRandomMsgChainId: 20 characters of [0-9a-zA-Z].
func NewChainID() string {
	b := make([]byte, 0, chainIDLen)
	// Rejection sampling keeps the characters uniform: 248 = 4 × 62.
	const limit = 256 - 256%len(chainIDAlphabet)
	var buf [2 * chainIDLen]byte
	for len(b) < chainIDLen {
		_, _ = rand.Read(buf[:]) // crypto/rand.Read never returns an error
		for _, c := range buf {
			if int(c) < limit && len(b) < chainIDLen {
				b = append(b, chainIDAlphabet[int(c)%len(chainIDAlphabet)])
			}
		}
	}
	return string(b)
}

// Chain numbers the messages of one (stream part, publisher, chain ID) as
// the SDK's createMessageRef does, and never goes backwards: a timestamp
// older than the last one is clamped to it and the sequence number bumped.
// A Chain is not safe for concurrent use.
type Chain struct {
	id      string
	last    MessageRef // valid if hasLast; a value, so Next allocates only the prev it returns
	hasLast bool
}

// NewChain starts an empty chain with the given ID.
func NewChain(id string) *Chain { return &Chain{id: id} }

// ID returns the message chain ID.
func (c *Chain) ID() string { return c.id }

// Last returns the reference of the last message handed out, or nil.
func (c *Chain) Last() *MessageRef {
	if !c.hasLast {
		return nil
	}
	r := c.last
	return &r
}

// Next returns the reference for a message at timestamp ts (ms) and the
// previous message's reference (nil for the first message of the chain).
// A timestamp at or before the last one reuses the last timestamp with the
// next sequence number; should that number overflow, the timestamp moves
// on by 1 ms instead, so references always strictly increase.
func (c *Chain) Next(ts int64) (ref MessageRef, prev *MessageRef) {
	prev = c.Last()
	switch {
	case prev == nil || ts > prev.Timestamp:
		ref = MessageRef{Timestamp: ts}
	case prev.SequenceNumber == math.MaxInt32:
		ref = MessageRef{Timestamp: prev.Timestamp + 1}
	default: // same millisecond, or the clock went backwards
		ref = MessageRef{Timestamp: prev.Timestamp, SequenceNumber: prev.SequenceNumber + 1}
	}
	c.last, c.hasLast = ref, true
	return ref, prev
}

// ChainState is the persistable form of a Chain.
type ChainState struct {
	ID   string      `json:"id"`
	Last *MessageRef `json:"last,omitempty"`
}

// State returns the chain's state for persistence.
func (c *Chain) State() ChainState { return ChainState{ID: c.id, Last: c.Last()} }

// RestoreChain continues a chain from saved state.
func RestoreChain(s ChainState) (*Chain, error) {
	if s.ID == "" {
		return nil, fmt.Errorf("restore chain: empty chain ID")
	}
	c := &Chain{id: s.ID}
	if s.Last != nil {
		c.last, c.hasLast = *s.Last, true
	}
	return c, nil
}

// MarshalBinary encodes the state as JSON (small, and readable in dumps).
func (s ChainState) MarshalBinary() ([]byte, error) { return json.Marshal(s) }

// UnmarshalBinary decodes state written by MarshalBinary.
func (s *ChainState) UnmarshalBinary(b []byte) error {
	if err := json.Unmarshal(b, s); err != nil {
		return fmt.Errorf("decode chain state: %w", err)
	}
	return nil
}
