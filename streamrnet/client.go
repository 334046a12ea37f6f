package streamrnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/streamr"
	"github.com/tributary-iot/tributary/streamr/pb"
)

// Direction is what a stream partition is joined for.
type Direction int

const (
	// Publish sends this client's messages to the network.
	Publish Direction = iota + 1
	// Subscribe also receives the stream partition's messages (a
	// subscribing proxy connection carries publishes too).
	Subscribe
)

// A Publish partition still receives the group key requests addressed to
// this client: Streamr nodes route a GroupKeyRequest to the proxy clients
// whose userId is its recipientId, whatever their direction (so a
// publisher behind a proxy can answer them, issue 18). Everything else a
// node sends on a Publish partition is dropped.

func (d Direction) proto() pb.ProxyDirection {
	if d == Subscribe {
		return pb.ProxyDirection_SUBSCRIBE
	}
	return pb.ProxyDirection_PUBLISH
}

// Client keeps proxy connections to every configured Streamr node for the
// stream partitions joined, reconnecting with backoff.
type Client struct {
	cfg    Config
	log    *slog.Logger
	nodeID []byte
	m      *metrics
	dedup  *dedup

	mu      sync.Mutex
	parts   map[string]Direction // wanted stream partitions
	proxies []*proxy
}

// New checks cfg and returns a client; Run connects it.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.ProtocolVersion == "" {
		cfg.ProtocolVersion = ProtocolVersion
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg: cfg, log: log.With("component", "streamr_network"), nodeID: newNodeID(),
		m: newMetrics(cfg.Registerer), dedup: newDedup(cfg.Limits.DedupWindow),
		parts: make(map[string]Direction),
	}
	for _, u := range cfg.Proxies {
		c.proxies = append(c.proxies, newProxy(c, u))
	}
	return c, nil
}

// Run keeps the proxy connections until ctx ends, then leaves every
// stream partition and closes them.
func (c *Client) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, p := range c.proxies {
		wg.Go(func() { p.run(ctx) })
	}
	wg.Wait()
	return nil
}

// Join asks every proxy for the stream partition (idempotent; Subscribe
// outranks Publish).
func (c *Client) Join(streamPart string, dir Direction) {
	c.mu.Lock()
	if c.parts[streamPart] < dir {
		c.parts[streamPart] = dir
	}
	c.mu.Unlock()
	c.wakeAll()
}

// Leave gives the stream partition up on every proxy.
func (c *Client) Leave(streamPart string) {
	c.mu.Lock()
	delete(c.parts, streamPart)
	c.mu.Unlock()
	c.wakeAll()
}

func (c *Client) wakeAll() {
	for _, p := range c.proxies {
		p.wakeUp()
	}
}

func (c *Client) wanted() map[string]Direction {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Direction, len(c.parts))
	for k, v := range c.parts {
		out[k] = v
	}
	return out
}

// Publish sends encoded StreamMessages of one stream partition, in order,
// through every proxy that has accepted the partition. Streamr's
// sendStreamMessage is a notification without acknowledgement, so each
// batch ends with a request on the same connection (a connection lock):
// its answer proves the node read everything before it. Publish returns
// len(encoded) once one proxy confirmed the batch, else 0 and the error
// (wrapping streamr.ErrNoPeers when no proxy has accepted the partition);
// the caller sends the batch again later, and nodes drop what they
// already have (they de-duplicate by message ID and chain).
func (c *Client) Publish(ctx context.Context, streamPart string, encoded [][]byte) (int, error) {
	var sessions []*proxySession
	for _, p := range c.proxies {
		if ps := p.joinedSession(streamPart); ps != nil {
			sessions = append(sessions, ps)
		}
	}
	if len(sessions) == 0 {
		return 0, fmt.Errorf("stream part %s: no proxy connection accepted: %w", streamPart, streamr.ErrNoPeers)
	}
	var errs []error
	for _, ps := range sessions {
		if err := ps.publishBatch(ctx, streamPart, encoded); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(sessions) {
		return 0, fmt.Errorf("stream part %s: %w", streamPart, errors.Join(errs...))
	}
	return len(encoded), nil
}

// deliver passes on a message a proxy delivered, once.
func (c *Client) deliver(p *proxy, streamPart string, raw []byte) {
	c.mu.Lock()
	dir := c.parts[streamPart]
	c.mu.Unlock()
	if dir != Subscribe && dir != Publish {
		p.dropped("not_subscribed")
		return
	}
	id, _, err := streamr.UnmarshalHeader(raw)
	if err != nil {
		p.dropped("decode")
		return
	}
	if dir == Publish && !c.keyRequestForUs(raw) {
		p.dropped("not_subscribed")
		return
	}
	p.countIn()
	if c.dedup.seen(dedupKey(streamPart, id)) {
		c.m.duplicates.Inc()
		return
	}
	if c.cfg.Deliver != nil {
		c.cfg.Deliver(streamPart, raw)
	}
}

// keyRequestForUs reports whether raw is a GroupKeyRequest whose
// recipient is this client's user.
func (c *Client) keyRequestForUs(raw []byte) bool {
	m, err := streamr.Unmarshal(raw)
	if err != nil {
		return false
	}
	req, ok := m.Body.(*streamr.GroupKeyRequest)
	return ok && bytes.Equal(req.RecipientID, c.cfg.UserID)
}

func dedupKey(streamPart string, id streamr.MessageID) string {
	return fmt.Sprintf("%s|%d|%d|%x|%s", streamPart, id.Timestamp, id.SequenceNumber, id.PublisherID, id.MsgChainID)
}

// Proxies reports the state of every proxy connection.
func (c *Client) Proxies() []streamr.ProxyState {
	out := make([]streamr.ProxyState, len(c.proxies))
	for i, p := range c.proxies {
		out[i] = p.snapshot()
	}
	return out
}

// backoff returns a jittered delay in [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
