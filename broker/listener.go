package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/tributary-iot/tributary/wsock"
)

// listener implements mochi's listeners.Listener for tcp, tls, ws and wss. It replaces mochi's
// own listeners because those (mochi listeners/tcp.go:74-93, websocket.go:107-122) drop accept
// errors silently, cannot report a port-0 address for websockets (they bind inside Serve), and
// leave no way to wait for connection goroutines, which goleak would flag.
type listener struct {
	id             string
	kind           string // tcp, tls, ws or wss
	address        string
	cert           *certificate // nil for tcp and ws; replaced by Broker.Reload
	connectTimeout time.Duration
	writes         writeLimits
	calls          listenerCalls

	log       *slog.Logger
	ln        net.Listener
	httpSrv   *http.Server // ws and wss only
	upgrader  *wsock.Upgrader
	establish listeners.EstablishFn

	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{}
	perSource map[string]int // open connections per source IP
	wg        sync.WaitGroup // one per connection handed to mochi
	done      chan struct{}  // closed by Close
	served    chan struct{}  // closed when Serve returns
}

var _ listeners.Listener = (*listener)(nil)

// writeLimits bound what a client may leave unread (see writeQueue).
type writeLimits struct {
	timeout   time.Duration
	maxBuffer int
	onSlow    func(remote, reason string)

	maxPerSource int // connections per source IP; <= 0: no limit
	onSourceFull func(remote string, limit int)
}

// listenerCalls are what a listener calls back into its Broker.
type listenerCalls struct {
	fail         func(error)    // reports a fatal accept error to Broker.Run
	connDone     func(net.Conn) // called as mochi is done with a connection (clientGates.release)
	closeClients func(string)   // disconnects the clients of a listener ID (Broker.closeListenerClients)
}

func newListener(id string, cfg Listener, cert *certificate, connectTimeout time.Duration, writes writeLimits, calls listenerCalls) *listener {
	return &listener{
		id:             id,
		kind:           cfg.Type,
		address:        cfg.Address,
		cert:           cert,
		connectTimeout: connectTimeout,
		writes:         writes,
		calls:          calls,
		conns:          map[net.Conn]struct{}{},
		perSource:      map[string]int{},
		done:           make(chan struct{}),
		served:         make(chan struct{}),
		// Subprotocol "mqtt" is what MQTT-over-WebSocket clients request. CheckOrigin is left nil
		// (same-origin only): MQTT clients send no Origin header, and a web page must not be
		// able to publish into the gateway from a visitor's browser. No message size limit:
		// mochi reads the stream in pieces and bounds each packet by max_packet_size.
		upgrader: wsock.NewUpgrader(wsock.Options{
			Subprotocols: []string{"mqtt"}, HandshakeTimeout: connectTimeout, ReadLimit: -1,
		}, nil),
	}
}

// ID returns the listener id.
func (l *listener) ID() string { return l.id }

// Protocol returns tcp, tls, ws or wss.
func (l *listener) Protocol() string { return l.kind }

// Address returns the bound address once Init has run, else the configured one.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the socket, so that bind errors surface from Broker.Run and port 0 resolves at once.
func (l *listener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return fmt.Errorf("listener %s: %w", l.id, err)
	}
	if l.cert != nil {
		ln = tls.NewListener(ln, &tls.Config{GetCertificate: l.cert.get, MinVersion: tls.VersionTLS12})
	}
	l.ln = ln
	if l.kind == "ws" || l.kind == "wss" {
		l.httpSrv = &http.Server{
			Handler:           http.HandlerFunc(l.serveWebsocket),
			ReadHeaderTimeout: l.connectTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	return nil
}

// Serve accepts connections until Close. mochi runs it on its own goroutine (listeners.go:90).
func (l *listener) Serve(establish listeners.EstablishFn) {
	defer close(l.served)
	l.establish = establish
	if l.httpSrv != nil {
		err := l.httpSrv.Serve(l.ln)
		if !errors.Is(err, http.ErrServerClosed) && !l.isClosed() {
			l.calls.fail(fmt.Errorf("listener %s (%s %s): %w", l.id, l.kind, l.Address(), err))
		}
		return
	}
	l.acceptLoop()
}

func (l *listener) acceptLoop() {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err == nil {
			backoff = 0
			if l.track(conn) {
				go l.serveConn(conn)
			}
			continue
		}
		if l.isClosed() {
			return
		}
		if !transientAcceptError(err) {
			l.calls.fail(fmt.Errorf("listener %s (%s %s): accept: %w", l.id, l.kind, l.Address(), err))
			return
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		l.log.Warn("accept failed, retrying", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-l.done:
			return
		}
	}
}

// transientAcceptError reports errors after which accepting can succeed again (out of file
// descriptors or memory, or a peer that reset before accept).
func transientAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// track registers a live connection; it refuses (and closes) connections arriving after Close
// and connections beyond the per-source limit.
func (l *listener) track(c net.Conn) bool {
	src := sourceIP(c.RemoteAddr().String())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return false
	}
	if l.writes.maxPerSource > 0 && l.perSource[src] >= l.writes.maxPerSource {
		_ = c.Close()
		l.writes.onSourceFull(c.RemoteAddr().String(), l.writes.maxPerSource)
		return false
	}
	l.perSource[src]++
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	return true
}

func (l *listener) untrack(c net.Conn) {
	src := sourceIP(c.RemoteAddr().String())
	l.mu.Lock()
	delete(l.conns, c)
	if l.perSource[src]--; l.perSource[src] <= 0 {
		delete(l.perSource, src)
	}
	l.mu.Unlock()
	l.wg.Done()
}

// serveConn hands one connection to mochi and blocks until the client is gone.
func (l *listener) serveConn(c net.Conn) {
	defer l.untrack(c)
	// mochi sets no deadline before CONNECT is read (server.go:401-408); bound the TLS handshake
	// and CONNECT here. mochi replaces the deadline with the keepalive once CONNECT is read.
	_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
	remote := c.RemoteAddr().String()
	wq := newWriteQueue(c, l.writes.timeout, l.writes.maxBuffer, func(reason string) { l.writes.onSlow(remote, reason) })
	conn := newTopicCheck(wq, wq.final)
	err := l.establish(l.id, conn)
	l.calls.connDone(conn)
	if err != nil && !isDisconnect(err) {
		l.log.Debug("client connection ended", "remote", remote, "err", err)
	}
	_ = wq.Close()
	<-wq.Closed()
}

func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

func (l *listener) serveWebsocket(w http.ResponseWriter, r *http.Request) {
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		l.log.Debug("websocket upgrade failed", "err", err)
		return // Upgrade has already written the HTTP error
	}
	c := wsock.NewStream(ws)
	if l.track(c) {
		l.serveConn(c)
	}
}

// Close stops accepting, disconnects this listener's clients, closes whatever connections
// remain and waits for their goroutines. mochi calls it from Server.Close
// (listeners.go:115-129) before waiting on its own client WaitGroup, so after Close returns
// no connection of this listener can still call into mochi.
//
// The CloseFn mochi passes is not called: it lists the clients with Clients.GetByListener,
// which takes the clients' read lock twice and so deadlocks the shutdown against a client
// connecting or disconnecting at that moment (mochi-mqtt/server#488, open in v2.7.9; it hung
// a CI run for 25 minutes). calls.closeClients does the same with one lock.
func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.done)
	// Bound mochi's DISCONNECT writes to clients that stopped reading.
	for c := range l.conns {
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	}
	l.mu.Unlock()

	if l.httpSrv != nil {
		_ = l.httpSrv.Close() // closes l.ln and connections still in the HTTP handshake
	} else if l.ln != nil {
		_ = l.ln.Close()
	}
	l.calls.closeClients(l.id)
	l.endConns()
}

// endConns ends the connections left after the clients were disconnected and waits for their
// goroutines. The clients' DISCONNECTs are queued and flush for at most closeFlush before their
// connections close; closing the sockets now would discard them. Expire the reads instead,
// which ends connections whose CONNECT mochi has not read yet, and cut whatever is left once
// the flushes are over (mochi moves a new client's read deadline to its keepalive).
func (l *listener) endConns() {
	l.mu.Lock()
	for c := range l.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	l.mu.Unlock()
	served := make(chan struct{})
	go func() { l.wg.Wait(); close(served) }()
	select {
	case <-served:
		return
	case <-time.After(closeFlush + time.Second):
	}
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	<-served
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
