// Package wsock is Tributary's one importer of a WebSocket library
// (gorilla/websocket). It gives every WebSocket the gateway speaks — MQTT
// over WebSocket, the app interfaces, the Streamr Network client — the same
// bounded connection: a size limit on every message read, a deadline on
// every write, one writer at a time, and keepalive pings that find peers
// which went away without closing.
package wsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// MessageType is the kind of a WebSocket data message.
type MessageType int

// The data message types (RFC 6455 §5.6).
const (
	Text   MessageType = websocket.TextMessage
	Binary MessageType = websocket.BinaryMessage
)

// Close codes (RFC 6455 §7.4.1) the gateway sends.
const (
	CloseNormal          = websocket.CloseNormalClosure
	CloseGoingAway       = websocket.CloseGoingAway
	CloseProtocolError   = websocket.CloseProtocolError
	CloseUnsupportedData = websocket.CloseUnsupportedData
	ClosePolicyViolation = websocket.ClosePolicyViolation
	CloseMessageTooBig   = websocket.CloseMessageTooBig
	CloseInternalError   = websocket.CloseInternalServerErr
	CloseTryAgainLater   = websocket.CloseTryAgainLater
)

// Defaults of Options.
const (
	DefaultReadLimit        = 1 << 20
	DefaultWriteTimeout     = 10 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
)

// Options bound one connection. Zero fields take the defaults above.
type Options struct {
	// ReadLimit is the largest message read; a larger one fails the read
	// and closes the connection with CloseMessageTooBig. Negative: none,
	// for a Stream whose reader bounds its own units (MQTT packets).
	ReadLimit int64
	// WriteTimeout bounds each Write and control frame.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds the opening handshake.
	HandshakeTimeout time.Duration
	// Subprotocols offered (Dial) or accepted in order of preference (Upgrader).
	Subprotocols []string
}

func (o Options) withDefaults() Options {
	if o.ReadLimit == 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return o
}

// Conn is one WebSocket connection. Read and NextReader belong to one
// reading goroutine; Write, Ping and Close may be called from any.
type Conn struct {
	ws           *websocket.Conn
	writeTimeout time.Duration
	wmu          sync.Mutex   // gorilla allows one writer at a time
	alive        atomic.Int64 // KeepAlive's read window in ns; 0: pongs extend nothing
}

func newConn(ws *websocket.Conn, o Options) *Conn {
	if o.ReadLimit > 0 {
		ws.SetReadLimit(o.ReadLimit)
	}
	c := &Conn{ws: ws, writeTimeout: o.WriteTimeout}
	// Installed once here: gorilla reads the handler inside Read, so
	// replacing it later would race with the reading goroutine.
	ws.SetPongHandler(func(string) error {
		if window := c.alive.Load(); window > 0 {
			_ = ws.SetReadDeadline(time.Now().Add(time.Duration(window)))
		}
		return nil
	})
	return c
}

// Dial opens a client connection to a ws:// or wss:// URL. wss:// verifies
// the server with the system's roots. A refused handshake's error names
// the HTTP status the server answered.
func Dial(ctx context.Context, url string, header http.Header, opts Options) (*Conn, error) {
	o := opts.withDefaults()
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: o.HandshakeTimeout,
		Subprotocols:     o.Subprotocols,
	}
	ws, resp, err := d.DialContext(ctx, url, header)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("websocket %s: handshake refused: %s", url, resp.Status)
		}
		return nil, fmt.Errorf("websocket %s: %w", url, err)
	}
	return newConn(ws, o), nil
}

// Upgrader accepts server connections.
type Upgrader struct {
	u    websocket.Upgrader
	opts Options
}

// NewUpgrader accepts connections bounded by opts. checkOrigin decides
// which browser origins may connect; nil accepts only requests whose Origin
// is absent or matches the Host (gorilla's same-origin default).
func NewUpgrader(opts Options, checkOrigin func(*http.Request) bool) *Upgrader {
	o := opts.withDefaults()
	return &Upgrader{
		u: websocket.Upgrader{
			HandshakeTimeout: o.HandshakeTimeout,
			Subprotocols:     o.Subprotocols,
			CheckOrigin:      checkOrigin,
		},
		opts: o,
	}
}

// Upgrade completes the handshake of r. On failure it has already answered
// the HTTP request with an error status.
func (u *Upgrader) Upgrade(w http.ResponseWriter, r *http.Request, header http.Header) (*Conn, error) {
	ws, err := u.u.Upgrade(w, r, header)
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade from %s: %w", r.RemoteAddr, err)
	}
	return newConn(ws, u.opts), nil
}

// IsUpgrade reports whether r asks for a WebSocket.
func IsUpgrade(r *http.Request) bool { return websocket.IsWebSocketUpgrade(r) }

// Read returns the next data message whole.
func (c *Conn) Read() (MessageType, []byte, error) {
	typ, p, err := c.ws.ReadMessage()
	return MessageType(typ), p, err
}

// NextReader returns the next data message as a stream; it is valid until
// the next call of Read or NextReader.
func (c *Conn) NextReader() (MessageType, io.Reader, error) {
	typ, r, err := c.ws.NextReader()
	return MessageType(typ), r, err
}

// Write sends p as one message within the write timeout.
func (c *Conn) Write(typ MessageType, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
		return err
	}
	return c.ws.WriteMessage(int(typ), p)
}

// Ping sends a ping within the write timeout.
func (c *Conn) Ping() error {
	return c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.writeTimeout))
}

// SetReadDeadline bounds the reads in progress and to come.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// KeepAlive pings every interval and keeps the read deadline one interval
// plus timeout ahead of the last pong or ping answer, so a Read on a peer
// that went silent fails instead of waiting forever. It returns when ctx
// ends or a ping cannot be written; the reading goroutine sees the failure.
// Messages the peer sends do not extend the deadline: only pongs do, so a
// peer must answer pings (every RFC 6455 endpoint does).
func (c *Conn) KeepAlive(ctx context.Context, interval, timeout time.Duration) error {
	c.alive.Store(int64(interval + timeout))
	_ = c.ws.SetReadDeadline(time.Now().Add(interval + timeout))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Ping(); err != nil {
				return fmt.Errorf("websocket ping to %s: %w", c.RemoteAddr(), err)
			}
		}
	}
}

// CloseWith sends a close frame with code and reason (bounded by the write
// timeout) and closes the connection.
func (c *Conn) CloseWith(code int, reason string) error {
	msg := websocket.FormatCloseMessage(code, reason)
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.writeTimeout))
	return c.ws.Close()
}

// Close closes the connection without a close frame.
func (c *Conn) Close() error { return c.ws.Close() }

// Subprotocol is the subprotocol the handshake agreed on.
func (c *Conn) Subprotocol() string { return c.ws.Subprotocol() }

// RemoteAddr is the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// LocalAddr is this end's network address.
func (c *Conn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// CloseCode is the code of the close frame that ended a read, or 0 when err
// is not a close (a network error, a deadline).
func CloseCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// IsNormalClose reports whether err is the peer closing normally or going away.
func IsNormalClose(err error) bool {
	return websocket.IsCloseError(err, CloseNormal, CloseGoingAway)
}

// ErrReadLimit is the error of a read whose message exceeded the read limit.
var ErrReadLimit = websocket.ErrReadLimit
