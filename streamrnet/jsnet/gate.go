package jsnet

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// Gate is a TCP relay on 127.0.0.1 in front of a Streamr node: while shut
// it drops every connection at once (the proxy is unreachable), Open lets
// them through to the node, and Shut cuts those open. A client pointed at
// the gate sees a link go down and come back while the node keeps its
// state, and connects only once the node is ready.
type Gate struct {
	l   net.Listener
	URL string

	mu     sync.Mutex
	target string // "" while shut
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewGate listens on a free port, shut; it closes at the end of t.
func NewGate(t testing.TB) *Gate {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{l: l, URL: "ws://" + l.Addr().String(), conns: make(map[net.Conn]struct{})}
	g.wg.Go(g.accept)
	t.Cleanup(g.close)
	return g
}

// Open relays new connections to the node listening on port.
func (g *Gate) Open(port int) {
	g.mu.Lock()
	g.target = fmt.Sprintf("127.0.0.1:%d", port)
	g.mu.Unlock()
}

// Shut cuts every relayed connection and refuses new ones.
func (g *Gate) Shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.target = ""
	for c := range g.conns {
		c.Close()
	}
}

func (g *Gate) accept() {
	for {
		c, err := g.l.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		target := g.target
		g.mu.Unlock()
		if target == "" {
			c.Close()
			continue
		}
		g.wg.Go(func() { g.relay(c, target) })
	}
}

func (g *Gate) relay(c net.Conn, target string) {
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	if !g.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

// track registers a relayed pair, or closes it if the gate shut meanwhile.
func (g *Gate) track(c, up net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.target == "" {
		c.Close()
		up.Close()
		return false
	}
	g.conns[c], g.conns[up] = struct{}{}, struct{}{}
	return true
}

func (g *Gate) close() {
	g.l.Close()
	g.Shut()
	g.wg.Wait()
}
