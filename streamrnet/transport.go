package streamrnet

import "context"

// Conn is one WebSocket connection to a Streamr node, as this package uses
// it: whole binary frames each way. Implementations bound the size of a
// frame they read, skip text frames (Streamr ignores them too), and are
// safe for one reader and one writer at a time.
type Conn interface {
	ReadFrame(ctx context.Context) ([]byte, error)
	WriteFrame(ctx context.Context, frame []byte) error
	Close() error
}

// Dialer opens a Conn to a ws:// or wss:// URL. maxFrame is the largest
// frame the Conn may read.
type Dialer interface {
	Dial(ctx context.Context, url string, maxFrame int) (Conn, error)
}
