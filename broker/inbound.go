package broker

import (
	"bytes"
	"net"
	"unicode/utf8"
)

// disconnectMalformed is an MQTT 5 DISCONNECT with reason 0x81 Malformed Packet and no
// properties: what MQTT 5 (1.5.4, 4.13.1) has a server send before it closes the connection
// over a packet with ill-formed UTF-8.
var disconnectMalformed = []byte{0xe0, 0x02, 0x81, 0x00}

// topicCheck watches the bytes a client sends, packet by packet, for a PUBLISH whose topic
// name is not well-formed UTF-8 (or holds U+0000). mochi's decoder refuses such a packet and
// closes the connection before any hook sees it (codec.go:47, clients.go:365), without the
// reason an MQTT 5 client is due; topicCheck queues that DISCONNECT 0x81 as the packet passes,
// and the write queue delivers it before the close. It reads only the fixed header of each
// packet, the protocol level of CONNECT and the topic of PUBLISH: it does not decode.
type topicCheck struct {
	net.Conn // the client's writeQueue
	final    func(b []byte)

	version byte
	inBody  bool
	header  [5]byte // fixed header byte and remaining length being read
	hlen    int
	left    int    // body bytes of the current packet not yet seen
	field   []byte // the body prefix being gathered: CONNECT up to its level, PUBLISH's topic
	want    int    // how many body bytes field needs
	done    bool   // a verdict was reached: pass everything on
}

func newTopicCheck(c net.Conn, final func([]byte)) *topicCheck {
	return &topicCheck{Conn: c, final: final}
}

// Read passes the client's bytes on to mochi, scanning them first.
func (t *topicCheck) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if n > 0 && !t.done {
		t.scan(p[:n])
	}
	return n, err
}

func (t *topicCheck) scan(b []byte) {
	for len(b) > 0 && !t.done {
		if !t.inBody {
			b = t.scanHeader(b)
			continue
		}
		b = t.scanBody(b)
	}
}

// scanHeader reads the fixed header byte and the remaining length (a varint of 1-4 bytes).
func (t *topicCheck) scanHeader(b []byte) []byte {
	for len(b) > 0 {
		t.header[t.hlen] = b[0]
		t.hlen++
		b = b[1:]
		switch {
		case t.hlen == 1:
		case t.header[t.hlen-1]&0x80 == 0:
			t.startBody()
			return b
		case t.hlen == len(t.header):
			t.done = true // a fifth length byte: malformed, mochi refuses it
			return b
		}
	}
	return b
}

func (t *topicCheck) startBody() {
	length, mult := 0, 1
	for _, c := range t.header[1:t.hlen] {
		length += int(c&0x7f) * mult
		mult *= 128
	}
	if cap(t.field) > 1024 {
		t.field = nil // a long topic's buffer is not kept for the connection's life
	}
	t.left, t.field, t.want = length, t.field[:0], 0
	switch t.header[0] >> 4 {
	case 1: // CONNECT: protocol name (2 + 4 bytes), then the level
		t.want = 7
	case 3: // PUBLISH: topic length (2 bytes), then the topic
		t.want = 2
	}
	t.hlen, t.inBody = 0, t.left > 0
}

func (t *topicCheck) scanBody(b []byte) []byte {
	take := min(len(b), t.left)
	for chunk := b[:take]; len(chunk) > 0 && len(t.field) < t.want && !t.done; {
		n := min(len(chunk), t.want-len(t.field))
		t.field = append(t.field, chunk[:n]...)
		chunk = chunk[n:]
		t.gathered()
	}
	t.left -= take
	t.inBody = t.left > 0
	return b[take:]
}

// gathered acts on the body prefix once it is complete.
func (t *topicCheck) gathered() {
	if len(t.field) < t.want {
		return
	}
	switch t.header[0] >> 4 {
	case 1:
		t.version = t.field[6]
	case 3:
		if t.want == 2 { // the length is in: now the topic
			t.want = 2 + (int(t.field[0])<<8 | int(t.field[1]))
			if t.want > 2 {
				return
			}
		}
		topic := t.field[2:]
		if !utf8.Valid(topic) || bytes.IndexByte(topic, 0) >= 0 {
			if t.version == 5 {
				t.final(disconnectMalformed)
			}
			t.done = true
		}
	}
}
