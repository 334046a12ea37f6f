package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawConn is a hand-driven MQTT connection for tests that need exact packets on the wire: what
// a hostile or unusual client sends, and every byte the broker answers.
type rawConn struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

func dialRaw(t testing.TB, addr string, version byte) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, conn: c, r: bufio.NewReader(c), version: version}
}

// connectPacket returns a CONNECT for id; the caller may adjust it before send.
func (rc *rawConn) connectPacket(id, user, pass string) packets.Packet {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: rc.version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        30,
			ClientIdentifier: id,
			UsernameFlag:     user != "",
			Username:         []byte(user),
			PasswordFlag:     pass != "",
			Password:         []byte(pass),
		},
	}
	return pk
}

// connect sends CONNECT and returns the CONNACK's reason code.
func (rc *rawConn) connect(pk packets.Packet) byte {
	rc.t.Helper()
	rc.send(pk)
	ack, err := rc.read(waitTimeout)
	if err != nil {
		rc.t.Fatalf("no CONNACK: %v", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		rc.t.Fatalf("got packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return ack.ReasonCode
}

// send encodes and writes pk.
func (rc *rawConn) send(pk packets.Packet) {
	rc.t.Helper()
	pk.ProtocolVersion = rc.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("rawConn: cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.write(buf.Bytes())
}

func (rc *rawConn) write(b []byte) {
	rc.t.Helper()
	_ = rc.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := rc.conn.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet from the broker, or an error (io.EOF once it closed the
// connection, a timeout if nothing came within d).
func (rc *rawConn) read(d time.Duration) (packets.Packet, error) {
	_ = rc.conn.SetReadDeadline(time.Now().Add(d))
	b, err := rc.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		return packets.Packet{}, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return packets.Packet{}, err
	}
	fh.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: rc.version}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("rawConn: unexpected packet type %d", fh.Type)
	}
	return pk, err
}

// expectClosed waits until the broker closes the connection, skipping packets before.
func (rc *rawConn) expectClosed(d time.Duration) {
	rc.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_, err := rc.read(time.Until(deadline))
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			rc.t.Fatalf("connection still open after %s", d)
		default:
			return
		}
	}
	rc.t.Fatalf("connection still open after %s", d)
}
