package broker

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Defaults for writes to clients.
const (
	// DefaultWriteTimeout bounds how long one write to a client may make no progress before
	// the client counts as slow and is disconnected.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxClientBuffer bounds the bytes queued for one client beyond what its socket
	// takes; a client that lets more pile up is disconnected.
	DefaultMaxClientBuffer = 512 << 10
)

// closeFlush bounds how long Close waits for queued bytes (a refusal, a DISCONNECT) to leave.
const closeFlush = time.Second

// errSlowClient is what writes to a client return once it has been cut off as slow.
var errSlowClient = errors.New("slow client: outbound data not read in time")

// writeQueue decouples mochi's writes to a client from the client's socket. mochi writes under
// the client's lock (clients.go:603) and publishers take that lock for every QoS>0 delivery
// (NextPacketID, clients.go:277), so a subscriber that stops reading would freeze every
// publisher on its topics once its socket buffer is full. Write here only appends to a bounded
// buffer; a goroutine per connection flushes it under a write deadline. A client whose buffer
// would overflow, or whose socket takes nothing for the write timeout, is disconnected.
type writeQueue struct {
	net.Conn
	timeout time.Duration
	max     int
	onSlow  func(reason string) // counts and logs a disconnect for slowness

	mu      sync.Mutex
	pending []byte
	err     error // sticky: set once the connection failed or was cut
	closing bool
	sealed  bool // final has queued the last bytes

	kick    chan struct{} // cap 1: pending has data or closing was set
	flushed chan struct{} // closed when flush returns
	closed  chan struct{} // closed when Close has closed the connection
}

func newWriteQueue(c net.Conn, timeout time.Duration, max int, onSlow func(string)) *writeQueue {
	q := &writeQueue{
		Conn: c, timeout: timeout, max: max, onSlow: onSlow,
		kick: make(chan struct{}, 1), flushed: make(chan struct{}), closed: make(chan struct{}),
	}
	go q.flush()
	return q
}

// Write queues p. It never blocks on the network.
func (q *writeQueue) Write(p []byte) (int, error) {
	q.mu.Lock()
	if q.err != nil || q.closing || q.sealed {
		err := q.err
		q.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	// One packet always fits an empty queue (packets are bounded by the maximum packet size).
	if len(q.pending) > 0 && len(q.pending)+len(p) > q.max {
		q.err = errSlowClient
		q.mu.Unlock()
		q.onSlow("outbound buffer full")
		_ = q.Conn.Close()
		return 0, errSlowClient
	}
	q.pending = append(q.pending, p...)
	q.mu.Unlock()
	q.signal()
	return len(p), nil
}

// final queues b as the last bytes the client gets (a DISCONNECT): later writes fail.
func (q *writeQueue) final(b []byte) {
	q.mu.Lock()
	if q.err == nil && !q.closing && !q.sealed {
		q.pending = append(q.pending, b...)
	}
	q.sealed = true
	q.mu.Unlock()
	q.signal()
}

func (q *writeQueue) signal() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// flush writes queued bytes until the queue is closed and empty or a write fails.
func (q *writeQueue) flush() {
	defer close(q.flushed)
	var spare []byte
	for range q.kick {
		q.mu.Lock()
		out, closing := q.pending, q.closing
		q.pending = spare[:0]
		q.mu.Unlock()
		if len(out) > 0 {
			if err := q.write(out); err != nil {
				return
			}
		}
		spare = out
		if closing {
			q.mu.Lock()
			empty := len(q.pending) == 0
			q.mu.Unlock()
			if empty {
				return
			}
			q.signal()
		}
	}
}

func (q *writeQueue) write(out []byte) error {
	_ = q.Conn.SetWriteDeadline(time.Now().Add(q.timeout))
	_, err := q.Conn.Write(out)
	if err == nil {
		return nil
	}
	q.mu.Lock()
	closing := q.closing
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !closing {
		q.onSlow("write timed out")
	}
	_ = q.Conn.Close()
	return err
}

// Close flushes what is queued (for at most closeFlush, so that a refusal or DISCONNECT
// reaches the client) and then closes the connection, without waiting: mochi closes its
// clients one after the other at shutdown (listeners.go:127), and one that does not read must
// not delay the others. Closed is closed once the connection is.
func (q *writeQueue) Close() error {
	q.mu.Lock()
	already := q.closing
	q.closing = true
	q.mu.Unlock()
	if already {
		return nil
	}
	q.signal()
	go func() {
		defer close(q.closed)
		t := time.NewTimer(closeFlush)
		defer t.Stop()
		select {
		case <-q.flushed:
		case <-t.C:
		}
		_ = q.Conn.Close()
	}()
	return nil
}

// Closed is closed once Close has closed the connection.
func (q *writeQueue) Closed() <-chan struct{} { return q.closed }

// SetDeadline sets only the read deadline: mochi sets the keepalive deadline on every packet it
// reads (clients.go:269), which must not lift the flusher's write deadline.
func (q *writeQueue) SetDeadline(t time.Time) error { return q.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored: the flusher owns the write deadline.
func (q *writeQueue) SetWriteDeadline(time.Time) error { return nil }
