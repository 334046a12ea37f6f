package main

import (
	"io"
	"net"
	"sync"
	"testing"
)

// linkProxy is a TCP proxy on 127.0.0.1 whose link can be cut: cutting
// closes every proxied connection and refuses new ones until restored,
// as a dropped uplink does to the overlay's connections.
type linkProxy struct {
	ln       net.Listener
	targeted chan struct{} // closed once target is set
	closed   chan struct{} // closed when the test ends

	mu     sync.Mutex
	target string
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// newLinkProxy listens on a free loopback port; connections wait for
// setTarget before they are relayed.
func newLinkProxy(t *testing.T) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, targeted: make(chan struct{}), closed: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		close(p.closed)
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *linkProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// setTarget sets the address connections are relayed to; call it once.
func (p *linkProxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
	close(p.targeted)
}

func (p *linkProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.relay(c) })
	}
}

func (p *linkProxy) relay(in net.Conn) {
	select {
	case <-p.targeted:
	case <-p.closed:
		in.Close()
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	out, err := net.Dial("tcp", target)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, out) {
		in.Close()
		out.Close()
		return
	}
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	wg.Go(func() { pipe(out, in) })
	wg.Go(func() { pipe(in, out) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

func (p *linkProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// setCut cuts (true) or restores (false) the link.
func (p *linkProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}
