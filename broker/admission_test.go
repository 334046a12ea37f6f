package broker

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// dialRawFrom connects a raw client from a chosen loopback source address (127.0.0.0/8 is all
// loopback on Linux), so that tests can tell sources apart.
func dialRawFrom(t *testing.T, src, addr string, version byte) (*rawConn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, conn: c, r: bufio.NewReader(c), version: version}, nil
}

// TestSilentClientsCannotHoldSlots repeats the attack of issue #13: connections that send
// nothing (or CONNECT with keepalive 0 and then nothing) from one address. The per-source limit
// refuses them beyond it while another address still gets in, and keepalive 0 is capped by the
// server's maximum (MQTT 5: Server Keep Alive in the CONNACK; 3.1.1: disconnected after 1.5x).
func TestSilentClientsCannotHoldSlots(t *testing.T) {
	b := startBroker(t, Config{MaxConnsPerSource: 8, MaxKeepAlive: 2 * time.Second}, &testHandler{durable: true})
	addr := b.tcpAddr()
	for range 8 {
		if _, err := dialRawFrom(t, "127.0.0.3", addr, 4); err != nil {
			t.Fatal(err)
		}
	}
	extra, err := dialRawFrom(t, "127.0.0.3", addr, 4)
	if err == nil {
		if _, err := extra.read(waitTimeout); err == nil || isTimeout(err) {
			t.Errorf("9th silent connection from one address not closed (%v)", err)
		}
	}
	legit, err := dialRawFrom(t, "127.0.0.4", addr, 5)
	if err != nil {
		t.Fatal(err)
	}
	pk := legit.connectPacket("sensor", "", "")
	pk.Connect.Keepalive = 0
	legit.send(pk)
	ack, err := legit.read(waitTimeout)
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("sensor from another address refused: %v 0x%02x", err, ack.ReasonCode)
	}
	if !ack.Properties.ServerKeepAliveFlag || ack.Properties.ServerKeepAlive != 2 {
		t.Errorf("CONNACK Server Keep Alive %v/%d, want 2 s for keepalive 0", ack.Properties.ServerKeepAliveFlag, ack.Properties.ServerKeepAlive)
	}
	if n := b.Stats().Refused["connections_per_source"]; n != 1 {
		t.Errorf("connections_per_source counted %d, want 1", n)
	}

	silent := dialRaw(t, addr, 4)
	pk = silent.connectPacket("silent", "", "")
	pk.Connect.Keepalive = 0
	if silent.connect(pk) != 0 {
		t.Fatal("silent client refused")
	}
	start := time.Now()
	silent.expectClosed(4 * time.Second) // 1.5 x 2 s
	t.Logf("silent MQTT 3.1.1 client with keepalive 0 disconnected after %s", time.Since(start).Round(10*time.Millisecond))
}

// TestConnectionsPerUser refuses a user's connection beyond the limit (MQTT 5: 0x97, 3.1.1:
// 0x03), but not a reconnect that takes over the user's own session.
func TestConnectionsPerUser(t *testing.T) {
	path := writeUsersFile(t, isolationUsers, map[string]string{"alice": "a-pw", "bob": "b-pw", "ops": "o-pw"})
	b := startBroker(t, Config{UsersFile: path, MaxConnsPerUser: 2}, &testHandler{durable: true})
	addr := b.tcpAddr()
	for _, id := range []string{"a1", "a2"} {
		rc := dialRaw(t, addr, 5)
		if code := rc.connect(rc.connectPacket(id, "alice", "a-pw")); code != 0 {
			t.Fatalf("%s: 0x%02x", id, code)
		}
	}
	for _, v := range []struct{ version, want byte }{{5, 0x97}, {4, 0x03}} {
		rc := dialRaw(t, addr, v.version)
		if code := rc.connect(rc.connectPacket("a3", "alice", "a-pw")); code != v.want {
			t.Errorf("MQTT %d: third connection of alice: 0x%02x, want 0x%02x", v.version, code, v.want)
		}
	}
	rc := dialRaw(t, addr, 5)
	if code := rc.connect(rc.connectPacket("a2", "alice", "a-pw")); code != 0 {
		t.Errorf("alice's reconnect taking over her own session a2 refused: 0x%02x", code)
	}
	rc = dialRaw(t, addr, 5)
	if code := rc.connect(rc.connectPacket("b1", "bob", "b-pw")); code != 0 {
		t.Errorf("bob refused because of alice's connections: 0x%02x", code)
	}
	if n := b.Stats().Refused["connections_per_user"]; n != 2 {
		t.Errorf("connections_per_user counted %d, want 2", n)
	}
}

// TestPasswordGuessing repeats the attack of issue #13: 16 parallel guessers against a user
// with a cost-10 hash. The guessers' source backs off and at most MaxConcurrentAuth bcrypt
// checks run at once (default 2), so a legitimate client from another address connects promptly.
func TestPasswordGuessing(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("o-pw"), 10)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(isolationUsers, "HASH(ops)", string(h), 1)
	path := writeUsersFile(t, body, map[string]string{"alice": "a-pw", "bob": "b-pw"})
	b := startBroker(t, Config{UsersFile: path, MaxConnsPerSource: 32}, &testHandler{durable: true})
	addr := b.tcpAddr()

	var connect bytes.Buffer
	wrong := dialRaw(t, addr, 4).connectPacket("guess", "ops", "wrong")
	wrong.ProtocolVersion = 4
	if err := wrong.ConnectEncode(&connect); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		connect := connect.Bytes()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				guess(addr, connect)
				attempts.Add(1)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	var worst time.Duration
	for range 3 {
		start := time.Now()
		rc, err := dialRawFrom(t, "127.0.0.6", addr, 5)
		if err != nil {
			t.Fatal(err)
		}
		rc.send(rc.connectPacket("sensor-1", "alice", "a-pw"))
		ack, err := rc.read(20 * time.Second)
		if err != nil {
			t.Fatalf("legitimate CONNECT unanswered during the attack: %v", err)
		}
		if code := ack.ReasonCode; code != 0 {
			t.Fatalf("legitimate CONNECT refused during the attack: 0x%02x", code)
		}
		worst = max(worst, time.Since(start))
		_ = rc.conn.Close()
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	failures := b.Stats().AuthFailures
	t.Logf("during ~3 s of 16 parallel guessers: %d guesses answered, %d passwords checked; worst legitimate CONNECT %s",
		attempts.Load(), failures, worst)
	bound := 2 * time.Second
	if raceEnabled {
		bound = 15 * time.Second
	}
	if worst > bound {
		t.Errorf("legitimate CONNECT took %s during the attack, want under %s", worst, bound)
	}
	if failures > 10 {
		t.Errorf("%d password checks for the guessers in ~3 s, want the backoff to hold them near log2(3 s / 250 ms) + concurrency", failures)
	}
}

// guess sends one CONNECT from 127.0.0.5 and waits (boundedly) for the answer.
func guess(addr string, connect []byte) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}, Timeout: time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(connect); err != nil {
		return
	}
	_, _ = c.Read(make([]byte, 64))
}

// TestStoredSessionsLimit fills the session table with persistent sessions that leave: beyond
// the limit a new persistent session is refused (MQTT 5: 0x97, 3.1.1: 0x03), while resuming one
// and clean sessions still work.
func TestStoredSessionsLimit(t *testing.T) {
	b := startBroker(t, Config{MaxSessions: 3}, &testHandler{durable: true})
	addr := b.tcpAddr()
	for _, id := range []string{"s1", "s2", "s3"} {
		rc, code, _ := rawSession(t, addr, 4, id, "", "")
		if code != 0 {
			t.Fatalf("%s refused: 0x%02x", id, code)
		}
		rc.disconnect()
	}
	waitClients(t, b, 0)
	for _, v := range []struct{ version, want byte }{{5, 0x97}, {4, 0x03}} {
		if _, code, _ := rawSession(t, addr, v.version, "s4", "", ""); code != v.want {
			t.Errorf("MQTT %d: 4th persistent session: 0x%02x, want 0x%02x", v.version, code, v.want)
		}
	}
	if _, code, present := rawSession(t, addr, 4, "s2", "", ""); code != 0 || !present {
		t.Errorf("resuming s2: 0x%02x present=%v", code, present)
	}
	clean := dialRaw(t, addr, 4)
	if code := clean.connect(clean.connectPacket("c1", "", "")); code != 0 {
		t.Errorf("clean session refused: 0x%02x", code)
	}
	if n := b.Stats().Refused["sessions_full"]; n != 2 {
		t.Errorf("sessions_full counted %d, want 2", n)
	}
}
