package broker

import (
	"context"
	"net"
	"sync"
)

// clientGates serialise, per client ID, two stretches of mochi's connection handling that
// otherwise race: a connection establishing its session (OnSessionEstablish until its CONNACK
// is encoded, by which time mochi has taken over the previous client and listed the new one)
// and a clean session ending (OnDisconnect until mochi's attachClient returns). mochi ends a
// clean session by checking that it was not taken over and only then deleting the client by
// ID (server.go:488-492): a connection of the same ID established in between was deleted with
// it, and every message for it was skipped without a trace (TestReconnectAsCleanSessionEnds).
// A gate belongs to one connection and is freed at the latest when mochi is done with it.
type clientGates struct {
	mu     sync.Mutex
	byID   map[string]*clientGate
	byConn map[net.Conn]*clientGate
}

type clientGate struct {
	id   string
	free chan struct{} // closed when released
}

func newClientGates() *clientGates {
	return &clientGates{byID: make(map[string]*clientGate), byConn: make(map[net.Conn]*clientGate)}
}

// hold takes id's gate for conn, waiting while another connection holds it, or until ctx is
// done (shutting down: nothing is established any more).
func (g *clientGates) hold(ctx context.Context, id string, conn net.Conn) {
	for {
		g.mu.Lock()
		cur := g.byID[id]
		if cur == nil {
			gate := &clientGate{id: id, free: make(chan struct{})}
			g.byID[id], g.byConn[conn] = gate, gate
			g.mu.Unlock()
			return
		}
		mine := g.byConn[conn] == cur
		g.mu.Unlock()
		if mine {
			return
		}
		select {
		case <-cur.free:
		case <-ctx.Done():
			return
		}
	}
}

// release frees the gate conn holds, if any.
func (g *clientGates) release(conn net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gate := g.byConn[conn]
	if gate == nil {
		return
	}
	delete(g.byConn, conn)
	delete(g.byID, gate.id)
	close(gate.free)
}
