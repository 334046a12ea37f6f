package broker

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttv3 "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitTimeout = 5 * time.Second

// logBuffer is a concurrency-safe log sink that tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testHandler records every message and answers with decide (Success when nil). Accepted
// messages get a Wait that succeeds at once, so that QoS 1 goes through the ackQueue, or, with
// durable set, no Wait (mochi's own ack path).
type testHandler struct {
	decide  func(*Message) ReasonCode
	durable bool

	mu   sync.Mutex
	msgs []*Message
}

func (h *testHandler) HandlePublish(_ context.Context, m *Message) Verdict {
	h.mu.Lock()
	h.msgs = append(h.msgs, m)
	h.mu.Unlock()
	v := Verdict{Code: Success}
	if h.decide != nil {
		v.Code = h.decide(m)
	}
	if v.Code == Success && !h.durable {
		v.Wait = func(context.Context) error { return nil }
	}
	return v
}

func (h *testHandler) messages() []*Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Message(nil), h.msgs...)
}

// rejectPayload returns a decide func rejecting payloads "reject" with code.
func rejectPayload(code ReasonCode) func(*Message) ReasonCode {
	return func(m *Message) ReasonCode {
		if string(m.Payload) == "reject" {
			return code
		}
		return Success
	}
}

type running struct {
	*Broker
	logs *logBuffer
}

// startBroker runs a broker until the test ends and checks that Run then returns nil.
func startBroker(t testing.TB, cfg Config, h Handler) running {
	t.Helper()
	r, _ := launchBroker(t, cfg, h)
	return r
}

// launchBroker runs a broker like startBroker and also returns a func that stops it (at most
// once) before the test ends.
func launchBroker(t testing.TB, cfg Config, h Handler) (running, func()) {
	t.Helper()
	if len(cfg.Listeners) == 0 {
		cfg.Listeners = []Listener{{Type: "tcp", Address: "127.0.0.1:0"}}
	}
	logs := &logBuffer{}
	b, err := New(cfg, h, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("broker not ready")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		})
	}
	t.Cleanup(stop)
	return running{b, logs}, stop
}

func (r running) tcpAddr() string { return r.Addrs()[0].String() }

// dialV3 connects an MQTT 3.1.1 client; set adjusts the options.
func dialV3(t testing.TB, url, id string, set func(*mqttv3.ClientOptions)) mqttv3.Client {
	t.Helper()
	o := mqttv3.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(waitTimeout).
		SetOrderMatters(true).SetKeepAlive(30 * time.Second)
	if set != nil {
		set(o)
	}
	c := mqttv3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("v3 connect %s to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// subscribeV3 subscribes c to filter and returns the received messages.
func subscribeV3(t testing.TB, c mqttv3.Client, filter string, qos byte) <-chan mqttv3.Message {
	t.Helper()
	ch := make(chan mqttv3.Message, 100)
	tok := c.Subscribe(filter, qos, func(_ mqttv3.Client, m mqttv3.Message) { ch <- m })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return ch
}

func publishV3(t testing.TB, c mqttv3.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	if tok := c.Publish(topic, qos, retain, payload); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// v5 is an MQTT 5 client and the messages it received.
type v5 struct {
	*paho.Client
	received chan *paho.Publish
}

// dialV5 connects an MQTT 5 client over TCP.
func dialV5(t testing.TB, addr, id, user, pass string) (v5, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return dialV5Conn(t, conn, id, user, pass)
}

// dialV5Conn connects an MQTT 5 client over conn.
func dialV5Conn(t testing.TB, conn net.Conn, id, user, pass string) (v5, error) {
	t.Helper()
	return connectV5(t, conn, &paho.Connect{
		ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != "",
	})
}

// connectV5 sends cp over conn and returns the connected client.
func connectV5(t testing.TB, conn net.Conn, cp *paho.Connect) (v5, error) {
	t.Helper()
	received := make(chan *paho.Publish, 100)
	c := paho.NewClient(paho.ClientConfig{
		ClientID:      cp.ClientID,
		Conn:          conn,
		PacketTimeout: waitTimeout,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { received <- pr.Packet; return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		_ = conn.Close()
		return v5{}, err
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		<-c.Done()
	})
	return v5{c, received}, nil
}

// dialV5Session connects an MQTT 5 client that resumes (or starts) a persistent session.
func dialV5Session(t testing.TB, addr, id, user, pass string) v5 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	expiry := uint32(300)
	c, err := connectV5(t, conn, &paho.Connect{
		ClientID: id, KeepAlive: 30, CleanStart: false,
		Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != "",
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry},
	})
	if err != nil {
		t.Fatalf("v5 connect %s: %v", id, err)
	}
	return c
}

// leave disconnects c and waits until the broker has seen it go.
func (c v5) leave(t testing.TB) {
	t.Helper()
	_ = c.Disconnect(&paho.Disconnect{})
	<-c.Done()
}

func mustDialV5(t testing.TB, addr, id, user, pass string) v5 {
	t.Helper()
	c, err := dialV5(t, addr, id, user, pass)
	if err != nil {
		t.Fatalf("v5 connect %s: %v", id, err)
	}
	return c
}

func (c v5) subscribe(t testing.TB, filter string, qos byte) (*paho.Suback, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
}

func (c v5) publish(t testing.TB, p *paho.Publish) (*paho.PublishResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return c.Publish(ctx, p)
}

// expectV3 waits for the next message and checks its payload.
func expectV3(t testing.TB, ch <-chan mqttv3.Message, payload string) {
	t.Helper()
	select {
	case m := <-ch:
		if string(m.Payload()) != payload {
			t.Fatalf("subscriber got %q on %s, want %q", m.Payload(), m.Topic(), payload)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("subscriber did not receive %q", payload)
	}
}

// expectV5 waits for the next message and checks its payload.
func expectV5(t testing.TB, ch <-chan *paho.Publish, payload string) *paho.Publish {
	t.Helper()
	select {
	case m := <-ch:
		if string(m.Payload) != payload {
			t.Fatalf("subscriber got %q on %s, want %q", m.Payload, m.Topic, payload)
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("subscriber did not receive %q", payload)
		return nil
	}
}

// writeUsersFile writes a users file with a fast (test-only) bcrypt cost.
// entries maps user name to password; acl adds publish/subscribe lines per user.
func writeUsersFile(t testing.TB, body string, passwords map[string]string) string {
	t.Helper()
	for name, pw := range passwords {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		body = strings.ReplaceAll(body, "HASH("+name+")", string(h))
	}
	path := filepath.Join(t.TempDir(), "users.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and returns their paths and a
// pool trusting the certificate.
func selfSignedCert(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tributary test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
