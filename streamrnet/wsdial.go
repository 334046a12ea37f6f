package streamrnet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/wsock"
)

// WebSocketDialer dials Streamr nodes with wsock: ws:// or wss:// (system
// roots), no path, no subprotocol. It pings every KeepAlive so a node that
// went silent is noticed and reconnected.
type WebSocketDialer struct {
	KeepAlive time.Duration // 0: DefaultKeepAlive
}

// DefaultKeepAlive is the ping interval of WebSocketDialer.
const DefaultKeepAlive = 15 * time.Second

// Dial implements Dialer.
func (d WebSocketDialer) Dial(ctx context.Context, url string, maxFrame int) (Conn, error) {
	c, err := wsock.Dial(ctx, url, nil, wsock.Options{ReadLimit: int64(maxFrame)})
	if err != nil {
		return nil, err
	}
	interval := d.KeepAlive
	if interval <= 0 {
		interval = DefaultKeepAlive
	}
	kctx, cancel := context.WithCancel(context.Background())
	wc := &wsConn{c: c, cancel: cancel}
	wc.wg.Go(func() {
		if err := c.KeepAlive(kctx, interval, interval); err != nil {
			c.Close()
		}
	})
	return wc, nil
}

// wsConn adapts a wsock.Conn to Conn.
type wsConn struct {
	c      *wsock.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// ReadFrame returns the next binary message; text messages are skipped,
// as Streamr nodes skip them.
func (w *wsConn) ReadFrame(context.Context) ([]byte, error) {
	for {
		typ, p, err := w.c.Read()
		if err != nil {
			return nil, err
		}
		if typ == wsock.Binary {
			return p, nil
		}
	}
}

// WriteFrame sends one binary message within the connection's write timeout.
func (w *wsConn) WriteFrame(ctx context.Context, frame []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.c.Write(wsock.Binary, frame); err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	return nil
}

// Close closes the connection and stops its pings.
func (w *wsConn) Close() error {
	var err error
	w.once.Do(func() {
		w.cancel()
		err = w.c.Close()
		w.wg.Wait()
	})
	return err
}
