package broker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// SessionStore keeps the broker's persistent-session records durably: clients, subscriptions,
// queued and in-flight QoS 1/2 messages, retained messages and delivery marks (see
// PublishMarked). Keys and values are the broker's; the store keeps them opaque. storage.Store
// implements it.
type SessionStore interface {
	// ScanSessions calls fn for every record whose key starts with prefix, in key order. fn
	// must not keep value.
	ScanSessions(prefix string, fn func(key string, value []byte) error) error
	// CommitSessions writes the records in one durable (synced) transaction; a nil value
	// deletes its key.
	CommitSessions(ctx context.Context, writes map[string][]byte) error
}

// committer group-commits session records: hooks put records into the batch being collected
// and one goroutine commits batches in order, so a record is durable once its batch is.
// A delivery holds groups shared while it produces its records, so one delivery's records
// (the queued copies and its mark) always land in the same batch: atomically.
type committer struct {
	store SessionStore // nil: sessions live in memory only
	log   *slog.Logger

	groups sync.RWMutex

	mu      sync.Mutex
	pending map[string][]byte
	batch   uint64        // number of the batch being collected; earlier ones are committed or committing
	durable uint64        // batches up to this one are committed
	flushed chan struct{} // closed and replaced after each commit
	closed  bool

	wake     chan struct{}
	done     chan struct{} // closed when run returns
	failures atomic.Uint64
}

// commitRetry is the pause before a failed commit is tried again.
const commitRetry = 500 * time.Millisecond

func newCommitter(store SessionStore, log *slog.Logger) *committer {
	return &committer{
		store:   store,
		log:     log,
		pending: make(map[string][]byte),
		batch:   1,
		flushed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// put adds a record write (nil value: delete) to the batch being collected and returns its
// number. Without a store it does nothing and returns 0, which is always durable.
func (c *committer) put(key string, value []byte) uint64 {
	if c.store == nil {
		return 0
	}
	c.mu.Lock()
	c.pending[key] = value
	n := c.batch
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return n
}

// current returns the number of the batch being collected: waiting for it makes everything
// put so far durable.
func (c *committer) current() uint64 {
	if c.store == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return c.batch - 1 // nothing in this one: the previous batch is the last with records
	}
	return c.batch
}

// wait blocks until batch n is committed, ctx is done or the committer has stopped.
func (c *committer) wait(ctx context.Context, n uint64) bool {
	for {
		c.mu.Lock()
		ok, stopped, flushed := c.durable >= n, c.closed, c.flushed
		c.mu.Unlock()
		switch {
		case ok:
			return true
		case stopped:
			return false
		}
		select {
		case <-flushed:
		case <-ctx.Done():
			return false
		}
	}
}

// run commits batches until stop is closed, then commits what is left and returns.
func (c *committer) run(stop <-chan struct{}) {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
			c.flush(stop)
		case <-stop:
			c.flush(nil)
			c.mu.Lock()
			c.closed = true
			close(c.flushed)
			c.mu.Unlock()
			return
		}
	}
}

// flush commits the batch being collected, retrying a failed commit until it succeeds or stop
// is closed (nil: one attempt).
func (c *committer) flush(stop <-chan struct{}) {
	c.groups.Lock() // no delivery is half-way through producing its records
	c.mu.Lock()
	writes, n := c.pending, c.batch
	c.pending = make(map[string][]byte)
	c.batch++
	c.mu.Unlock()
	c.groups.Unlock()
	if len(writes) > 0 {
		for {
			err := c.store.CommitSessions(context.Background(), writes)
			if err == nil {
				break
			}
			if c.failures.Add(1) == 1 || c.failures.Load()%100 == 0 {
				c.log.Error("persisting MQTT sessions failed; retrying", "records", len(writes), "failures", c.failures.Load(), "err", err)
			}
			if stop == nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(commitRetry):
			}
		}
	}
	c.mu.Lock()
	c.durable = n
	close(c.flushed)
	c.flushed = make(chan struct{})
	c.mu.Unlock()
}
