package broker

import (
	"bytes"
	"net"
	"testing"
)

// readerConn is a net.Conn whose reads come from chunks, one per Read.
type readerConn struct {
	net.Conn
	chunks [][]byte
}

func (c *readerConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, net.ErrClosed
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// verdict runs topicCheck over stream, split into reads of size split (0: one read), and
// returns what it queued for the client.
func verdict(stream []byte, split int) []byte {
	var chunks [][]byte
	for rest := stream; len(rest) > 0; {
		n := len(rest)
		if split > 0 {
			n = min(n, split)
		}
		chunks, rest = append(chunks, rest[:n]), rest[n:]
	}
	var final []byte
	t := newTopicCheck(&readerConn{chunks: chunks}, func(b []byte) { final = append(final, b...) })
	buf := make([]byte, 64)
	for {
		if _, err := t.Read(buf); err != nil {
			return final
		}
	}
}

// FuzzTopicCheck feeds client byte streams to topicCheck: it must not panic, and its verdict
// must not depend on how the stream was split into reads.
func FuzzTopicCheck(f *testing.F) {
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 30, 0, 0, 0, 0, 0}
	f.Add(append(append([]byte{}, connect...), 0x30, 6, 0, 3, 't', '/', 0xff, 0), 1)
	f.Add(append(append([]byte{}, connect...), 0x30, 7, 0, 3, 't', '/', 'a', 0, 0), 3)
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, 2)
	f.Fuzz(func(t *testing.T, stream []byte, split int) {
		whole := verdict(stream, 0)
		if parts := verdict(stream, 1+abs(split)%17); !bytes.Equal(whole, parts) {
			t.Fatalf("verdict %x in one read, %x in reads of %d", whole, parts, 1+abs(split)%17)
		}
		if len(whole) > 0 && !bytes.Equal(whole, disconnectMalformed) {
			t.Fatalf("queued %x, want nothing or one DISCONNECT 0x81", whole)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
