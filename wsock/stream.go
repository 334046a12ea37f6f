package wsock

import (
	"errors"
	"io"
	"net"
	"time"
)

// Stream presents a WebSocket as a byte stream, as MQTT over WebSocket
// needs: reads run across binary messages (one packet may span messages,
// and one message hold several), each Write is one binary message. Its
// deadlines are the WebSocket's: gorilla sets the socket's write deadline
// itself on every frame, so one set on the socket underneath would be lost.
type Stream struct {
	c *Conn
	r io.Reader // current message, nil between messages
}

var _ net.Conn = (*Stream)(nil)

// NewStream wraps c. Text messages fail the read: byte streams are binary.
func NewStream(c *Conn) *Stream { return &Stream{c: c} }

// Read reads from the current binary message, moving to the next one when
// it is exhausted.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			typ, r, err := s.c.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != Binary {
				return 0, errors.New("websocket: a text message in a binary stream")
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if errors.Is(err, io.EOF) {
			s.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message within the deadline last set (none
// if unset), not the Conn's write timeout: the owner of the stream bounds
// its writes.
func (s *Stream) Write(p []byte) (int, error) {
	s.c.wmu.Lock()
	defer s.c.wmu.Unlock()
	if err := s.c.ws.WriteMessage(int(Binary), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the connection.
func (s *Stream) Close() error { return s.c.Close() }

// LocalAddr is this end's address.
func (s *Stream) LocalAddr() net.Addr { return s.c.LocalAddr() }

// RemoteAddr is the peer's address.
func (s *Stream) RemoteAddr() net.Addr { return s.c.RemoteAddr() }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SetReadDeadline bounds reads.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.c.ws.SetReadDeadline(t) }

// SetWriteDeadline bounds writes, data and control frames alike.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.c.ws.SetWriteDeadline(t) }
