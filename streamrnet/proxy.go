package streamrnet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// leaveTimeout bounds the leave notices sent when the client stops.
const leaveTimeout = 2 * time.Second

// proxy is one configured Streamr node and its current session.
type proxy struct {
	c    *Client
	url  string
	wake chan struct{}
	pm   proxyMetrics

	mu     sync.Mutex
	cur    *proxySession // nil while not connected
	state  streamr.ProxyState
	logged map[string]bool // drop kinds logged this session
}

// proxySession is a session with the stream partitions it has accepted.
type proxySession struct {
	*session
	p      *proxy
	joined map[string]Direction // guarded by p.mu
}

func newProxy(c *Client, url string) *proxy {
	return &proxy{
		c: c, url: url, wake: make(chan struct{}, 1), pm: c.m.forProxy(url),
		state: streamr.ProxyState{URL: url, State: streamr.ProxyConnecting, Since: time.Now()},
	}
}

func (p *proxy) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run connects, serves and reconnects with backoff until ctx ends.
func (p *proxy) run(ctx context.Context) {
	lim := p.c.cfg.Limits
	delay := lim.MinBackoff
	for ctx.Err() == nil {
		p.setState(streamr.ProxyConnecting, nil)
		began := time.Now()
		err := p.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		p.setState(streamr.ProxyBackoff, err)
		if time.Since(began) > lim.MaxBackoff {
			delay = lim.MinBackoff // it was up a while: not a flapping proxy
		}
		wait := jitter(delay)
		p.c.log.Warn("Streamr node connection failed; retrying", "proxy", p.url, "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, lim.MaxBackoff)
	}
}

// connect runs one session: dial, handshake, lock, join, serve.
func (p *proxy) connect(ctx context.Context) error {
	cfg := p.c.cfg
	conn, err := cfg.Dialer.Dial(ctx, p.url, cfg.Limits.MaxFrameBytes)
	if err != nil {
		p.pm.errors.WithLabelValues("dial").Inc()
		return fmt.Errorf("dial %s: %w", p.url, err)
	}
	s, err := handshake(ctx, conn, p.url, clientDescriptor(p.c.nodeID), cfg.Limits, cfg.ProtocolVersion)
	if err != nil {
		conn.Close()
		p.pm.errors.WithLabelValues("handshake").Inc()
		return err
	}
	ps := &proxySession{session: s, p: p, joined: make(map[string]Direction)}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	s.ev = sessionEvents{
		streamMessage: func(part string, raw []byte) { p.c.deliver(p, part, raw) },
		dropped:       p.dropped,
		left:          func(part string) { p.forget(ps, part) },
		unknown: func(service, method string) {
			p.pm.errors.WithLabelValues("unknown_method").Inc()
			p.c.log.Debug("answered a Streamr node's request UNKNOWN_RPC_METHOD", "proxy", p.url, "service", service, "method", method)
		},
	}
	go func() { runErr <- s.run(sctx) }()
	if err := s.setPrivate(ctx); err != nil {
		return fmt.Errorf("set connection to %s private: %w", p.url, err)
	}
	if ok, err := s.lock(ctx); err != nil || !ok {
		// Not fatal: an unlocked connection works until the node prunes it.
		p.c.log.Warn("Streamr node refused the connection lock", "proxy", p.url, "accepted", ok, "err", err)
	}
	p.setSession(ps)
	p.c.log.Info("connected to Streamr node", "proxy", p.url, "node_id", fmt.Sprintf("%x", s.remote.GetNodeId()))
	defer p.setSession(nil)
	for {
		if err := ps.sync(ctx); err != nil {
			cancel()
			<-runErr
			return err
		}
		select {
		case <-p.wake:
		case err := <-runErr:
			p.pm.errors.WithLabelValues("connection").Inc()
			return err
		case <-time.After(cfg.Limits.MaxBackoff):
			// Retry refused partitions now and then.
		case <-ctx.Done():
			ps.leaveAll()
			cancel()
			<-runErr
			return ctx.Err()
		}
	}
}

// sync requests the wanted stream partitions this session lacks and
// leaves those no longer wanted.
func (ps *proxySession) sync(ctx context.Context) error {
	want := ps.p.c.wanted()
	for part, dir := range want {
		ps.p.mu.Lock()
		have := ps.joined[part]
		ps.p.mu.Unlock()
		if have == dir {
			continue
		}
		ok, err := ps.requestProxy(ctx, part, dir.proto(), ps.p.c.cfg.UserID)
		var rpcErr *RPCError
		switch {
		case errors.As(err, &rpcErr):
			ps.p.pm.errors.WithLabelValues("refused").Inc()
			ps.p.c.log.Warn("Streamr node refused the proxy connection", "proxy", ps.p.url, "stream_part", part, "err", err)
			continue
		case err != nil && ps.closedErr() != nil:
			return fmt.Errorf("request proxy connection for %s: %w", part, err)
		case err != nil:
			// A node that has not joined the partition does not answer.
			ps.p.pm.errors.WithLabelValues("refused").Inc()
			ps.p.c.log.Warn("Streamr node did not accept the proxy connection; retrying later", "proxy", ps.p.url, "stream_part", part, "err", err)
			continue
		case !ok:
			ps.p.pm.errors.WithLabelValues("refused").Inc()
			ps.p.c.log.Warn("Streamr node does not accept proxy connections for the stream part", "proxy", ps.p.url, "stream_part", part)
			continue
		}
		ps.p.mu.Lock()
		ps.joined[part] = dir
		ps.p.mu.Unlock()
	}
	for part := range ps.joinedParts() {
		if _, ok := want[part]; !ok {
			ps.p.forget(ps, part)
			if err := ps.leave(ctx, part); err != nil {
				return fmt.Errorf("leave %s: %w", part, err)
			}
		}
	}
	return nil
}

func (ps *proxySession) joinedParts() map[string]Direction {
	ps.p.mu.Lock()
	defer ps.p.mu.Unlock()
	out := make(map[string]Direction, len(ps.joined))
	for k, v := range ps.joined {
		out[k] = v
	}
	return out
}

// leaveAll sends leave notices for every joined partition as the client stops.
func (ps *proxySession) leaveAll() {
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	for part := range ps.joinedParts() {
		_ = ps.leave(ctx, part) // best effort: the connection closes next
	}
}

// publishBatch sends messages, then waits for the node's answer to a
// lock request, which it reads after them; counted once confirmed.
func (ps *proxySession) publishBatch(ctx context.Context, part string, encoded [][]byte) error {
	err := ps.sendAll(ctx, part, encoded)
	if err == nil {
		_, err = ps.lock(ctx)
	}
	if err != nil {
		ps.p.pm.errors.WithLabelValues("write").Inc()
		ps.p.noteError(err)
		ps.conn.Close() // unconfirmed: reconnect, the caller sends again
		return fmt.Errorf("publish through %s: %w", ps.p.url, err)
	}
	ps.p.pm.out.Add(float64(len(encoded)))
	ps.p.mu.Lock()
	ps.p.state.MessagesOut += uint64(len(encoded))
	ps.p.mu.Unlock()
	return nil
}

func (ps *proxySession) sendAll(ctx context.Context, part string, encoded [][]byte) error {
	for _, raw := range encoded {
		if err := ps.session.publish(ctx, part, raw); err != nil {
			return err
		}
	}
	return nil
}

// forget drops a partition the node left or this client leaves; the next
// sync asks for it again if it is still wanted.
func (p *proxy) forget(ps *proxySession, part string) {
	p.mu.Lock()
	delete(ps.joined, part)
	p.mu.Unlock()
	p.wakeUp()
}

func (p *proxy) joinedSession(part string) *proxySession {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return nil
	}
	if _, ok := p.cur.joined[part]; !ok {
		return nil
	}
	return p.cur
}

func (p *proxy) setSession(ps *proxySession) {
	p.mu.Lock()
	p.cur = ps
	p.logged = make(map[string]bool)
	p.mu.Unlock()
	if ps != nil {
		p.setState(streamr.ProxyConnected, nil)
		p.pm.connected.Set(1)
	} else {
		p.pm.connected.Set(0)
	}
}

func (p *proxy) setState(state string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state.State != state {
		p.state.State, p.state.Since = state, time.Now()
	}
	if err != nil {
		p.state.Errors++
		p.state.LastError = err.Error()
	}
}

func (p *proxy) noteError(err error) {
	p.mu.Lock()
	p.state.Errors++
	p.state.LastError = err.Error()
	p.mu.Unlock()
}

func (p *proxy) countIn() {
	p.pm.in.Inc()
	p.mu.Lock()
	p.state.MessagesIn++
	p.mu.Unlock()
}

// dropped counts a refused frame or request and logs its kind once a session.
func (p *proxy) dropped(kind string) {
	p.pm.errors.WithLabelValues(kind).Inc()
	p.mu.Lock()
	first := !p.logged[kind]
	if p.logged != nil {
		p.logged[kind] = true
	}
	p.state.Errors++
	p.mu.Unlock()
	if first {
		p.c.log.Warn("dropped what a Streamr node sent (logged once per connection)", "proxy", p.url, "kind", kind)
	}
}

func (p *proxy) snapshot() streamr.ProxyState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}
