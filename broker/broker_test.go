package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttv3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

func TestPublishAcceptedEndToEnd(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) { testPublishAccepted(t, durable) })
	}
}

// testPublishAccepted checks acceptance with a Wait (ackQueue for QoS 1) or without one (mochi's
// ack path).
func testPublishAccepted(t *testing.T, durable bool) {
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("v3/qos%d", qos), func(t *testing.T) {
			h := &testHandler{durable: durable}
			b := startBroker(t, Config{}, h)
			sub := subscribeV3(t, dialV3(t, "tcp://"+b.tcpAddr(), "sub", nil), "sensors/#", 2)
			pub := dialV3(t, "tcp://"+b.tcpAddr(), "sensor-1", nil)
			publishV3(t, pub, "sensors/sensor-1/temp", qos, false, "21.5")
			expectV3(t, sub, "21.5")

			want := Message{ClientID: "sensor-1", Topic: "sensors/sensor-1/temp", Payload: []byte("21.5"), QoS: qos, ProtocolVersion: 4}
			checkMessages(t, h, want)
		})
		t.Run(fmt.Sprintf("v5/qos%d", qos), func(t *testing.T) {
			h := &testHandler{durable: durable}
			b := startBroker(t, Config{}, h)
			sub := mustDialV5(t, b.tcpAddr(), "sub", "", "")
			if _, err := sub.subscribe(t, "sensors/#", 2); err != nil {
				t.Fatal(err)
			}
			pub := mustDialV5(t, b.tcpAddr(), "sensor-1", "", "")
			utf8 := byte(1)
			_, err := pub.publish(t, &paho.Publish{
				Topic: "sensors/sensor-1/temp", QoS: qos, Payload: []byte("21.5"),
				Properties: &paho.PublishProperties{
					ContentType: "text/plain", PayloadFormat: &utf8,
					User: paho.UserProperties{{Key: "unit", Value: "C"}, {Key: "unit", Value: "K"}},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			expectV5(t, sub.received, "21.5")

			want := Message{
				ClientID: "sensor-1", Topic: "sensors/sensor-1/temp", Payload: []byte("21.5"), QoS: qos, ProtocolVersion: 5,
				UserProperties: []UserProperty{{"unit", "C"}, {"unit", "K"}}, ContentType: "text/plain", PayloadFormatUTF8: true,
			}
			checkMessages(t, h, want)
		})
	}
}

func checkMessages(t *testing.T, h *testHandler, want ...Message) {
	t.Helper()
	got := h.messages()
	if len(got) != len(want) {
		t.Fatalf("handler saw %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ClientID != w.ClientID || g.Username != w.Username || g.Topic != w.Topic || string(g.Payload) != string(w.Payload) ||
			g.QoS != w.QoS || g.Retain != w.Retain || g.ProtocolVersion != w.ProtocolVersion || g.ContentType != w.ContentType ||
			g.PayloadFormatUTF8 != w.PayloadFormatUTF8 || !slices.Equal(g.UserProperties, w.UserProperties) {
			t.Errorf("message %d:\n got %+v\nwant %+v", i, *g, w)
		}
	}
}

// blockingHandler accepts every message with a Wait that blocks until release is closed.
type blockingHandler struct {
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) HandlePublish(context.Context, *Message) Verdict {
	h.entered <- struct{}{}
	return Verdict{Code: Success, Wait: func(ctx context.Context) error {
		select {
		case <-h.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
}

func TestAckWaitsForDurability(t *testing.T) {
	for _, tc := range []struct {
		name    string
		publish func(t *testing.T, addr string) <-chan error
	}{
		{"v3/qos1", publishV3Async(1)},
		{"v3/qos2", publishV3Async(2)},
		{"v5/qos1", publishV5Async(1)},
		{"v5/qos2", publishV5Async(2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &blockingHandler{entered: make(chan struct{}, 1), release: make(chan struct{})}
			b := startBroker(t, Config{}, h)
			acked := tc.publish(t, b.tcpAddr())
			select {
			case <-h.entered:
			case <-time.After(waitTimeout):
				t.Fatal("handler not called")
			}
			// Wait is blocked: the ack must not have been sent. Give a wrongly early ack time
			// to travel over loopback before checking.
			select {
			case err := <-acked:
				t.Fatalf("publish completed (err %v) before Wait returned", err)
			case <-time.After(200 * time.Millisecond):
			}
			close(h.release)
			select {
			case err := <-acked:
				if err != nil {
					t.Fatalf("publish after release: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("no ack after Wait returned")
			}
		})
	}
}

func publishV3Async(qos byte) func(t *testing.T, addr string) <-chan error {
	return func(t *testing.T, addr string) <-chan error {
		c := dialV3(t, "tcp://"+addr, "pub", nil)
		tok := c.Publish("a/b", qos, false, "x")
		done := make(chan error, 1)
		go func() {
			tok.Wait()
			done <- tok.Error()
		}()
		return done
	}
}

func publishV5Async(qos byte) func(t *testing.T, addr string) <-chan error {
	return func(t *testing.T, addr string) <-chan error {
		c := mustDialV5(t, addr, "pub", "", "")
		done := make(chan error, 1)
		go func() {
			_, err := c.publish(t, &paho.Publish{Topic: "a/b", QoS: qos, Payload: []byte("x")})
			done <- err
		}()
		return done
	}
}

var rejectionCodes = []ReasonCode{UnspecifiedError, ImplementationSpecificError, NotAuthorized, TopicNameInvalid, QuotaExceeded, PayloadFormatInvalid}

func TestRejectionMQTT5(t *testing.T) {
	for _, code := range rejectionCodes {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", code, qos), func(t *testing.T) {
				b := startBroker(t, Config{}, &testHandler{decide: rejectPayload(code)})
				sub := mustDialV5(t, b.tcpAddr(), "sub", "", "")
				if _, err := sub.subscribe(t, "t/#", 2); err != nil {
					t.Fatal(err)
				}
				pub := mustDialV5(t, b.tcpAddr(), "pub", "", "")
				resp, _ := pub.publish(t, &paho.Publish{Topic: "t/1", QoS: qos, Retain: true, Payload: []byte("reject")})
				if resp == nil || resp.ReasonCode != byte(code) {
					t.Fatalf("publish response %+v, want reason 0x%02x", resp, byte(code))
				}
				// Order is kept per subscriber: the accepted marker arrives first only if the
				// rejected message was never delivered.
				if _, err := pub.publish(t, &paho.Publish{Topic: "t/1", QoS: qos, Payload: []byte("ok")}); err != nil {
					t.Fatal(err)
				}
				expectV5(t, sub.received, "ok")
				assertNotRetained(t, b, "t/1")
				assertRejected(t, b, code, "pub", "t/1")
			})
		}
	}
}

// assertNotRetained checks that a fresh subscriber gets no retained message for topic.
func assertNotRetained(t *testing.T, b running, topic string) {
	t.Helper()
	late := mustDialV5(t, b.tcpAddr(), "late", "", "")
	if _, err := late.subscribe(t, topic, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(topic, []byte("marker"), 1); err != nil {
		t.Fatal(err)
	}
	expectV5(t, late.received, "marker")
}

func assertRejected(t *testing.T, b running, code ReasonCode, client, topic string) {
	t.Helper()
	if n := b.Stats().Rejected[code]; n != 1 {
		t.Errorf("Stats().Rejected[%s] = %d, want 1", code, n)
	}
	logs := b.logs.String()
	for _, want := range []string{"publish rejected", "client=" + client, "topic=" + topic, "reason=" + code.String()} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestRejectionMQTT311AckedAndDropped(t *testing.T) {
	for _, code := range rejectionCodes {
		if code == QuotaExceeded {
			continue // see TestQuotaExceededMQTT311Disconnects
		}
		for _, qos := range []byte{0, 1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", code, qos), func(t *testing.T) {
				b := startBroker(t, Config{}, &testHandler{decide: rejectPayload(code)})
				sub := subscribeV3(t, dialV3(t, "tcp://"+b.tcpAddr(), "sub", nil), "t/#", 2)
				pub := dialV3(t, "tcp://"+b.tcpAddr(), "pub", nil)
				publishV3(t, pub, "t/1", qos, true, "reject") // acknowledged (QoS>0) ...
				publishV3(t, pub, "t/1", qos, false, "ok")
				expectV3(t, sub, "ok") // ... but never delivered
				assertNotRetained(t, b, "t/1")
				assertRejected(t, b, code, "pub", "t/1")
			})
		}
	}
}

func TestQuotaExceededMQTT311Disconnects(t *testing.T) {
	// The first attempt is refused, later ones accepted: the client must retry the message.
	var refused bool
	h := &testHandler{decide: func(*Message) ReasonCode {
		if !refused {
			refused = true
			return QuotaExceeded
		}
		return Success
	}}
	b := startBroker(t, Config{}, h)
	lost := make(chan error, 1)
	pub := dialV3(t, "tcp://"+b.tcpAddr(), "pub", func(o *mqttv3.ClientOptions) {
		o.SetCleanSession(false).SetConnectionLostHandler(func(_ mqttv3.Client, err error) { lost <- err })
	})
	tok := pub.Publish("t/1", 1, false, "reading")
	select {
	case <-lost:
	case <-time.After(waitTimeout):
		t.Fatal("client not disconnected")
	}
	if tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil {
		t.Fatal("publish acknowledged although the handler refused it")
	}
	assertRejected(t, b, QuotaExceeded, "pub", "t/1")

	// Reconnecting resumes the unacknowledged message from the client's session.
	if tok := pub.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("reconnect: %v", tok.Error())
	}
	deadline := time.Now().Add(waitTimeout)
	for len(h.messages()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	msgs := h.messages()
	if len(msgs) != 2 || string(msgs[1].Payload) != "reading" {
		t.Fatalf("handler saw %d messages after reconnect, want the resent reading", len(msgs))
	}
}

func TestInvalidTopicNameIsAnswered(t *testing.T) {
	// mochi drops "$SYS/..." publishes without an ack (server.go:866); the broker answers them.
	h := &testHandler{}
	b := startBroker(t, Config{}, h)
	pub := mustDialV5(t, b.tcpAddr(), "pub", "", "")
	resp, _ := pub.publish(t, &paho.Publish{Topic: "$SYS/x", QoS: 1, Payload: []byte("x")})
	if resp == nil || resp.ReasonCode != byte(TopicNameInvalid) {
		t.Fatalf("publish response %+v, want topic name invalid", resp)
	}
	if len(h.messages()) != 0 {
		t.Error("handler saw a $SYS publish")
	}
	assertRejected(t, b, TopicNameInvalid, "pub", "$SYS/x")

	v3 := dialV3(t, "tcp://"+b.tcpAddr(), "pub3", nil)
	publishV3(t, v3, "$SYS/y", 1, false, "y") // acknowledged and dropped, not left hanging
}

func TestListenerTypes(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	for _, tc := range []struct {
		typ, scheme string
	}{{"tcp", "tcp"}, {"tls", "ssl"}, {"ws", "ws"}, {"wss", "wss"}} {
		t.Run(tc.typ, func(t *testing.T) {
			l := Listener{Type: tc.typ, Address: "127.0.0.1:0"}
			if tc.typ == "tls" || tc.typ == "wss" {
				l.CertFile, l.KeyFile = certFile, keyFile
			}
			h := &testHandler{}
			b := startBroker(t, Config{Listeners: []Listener{l}}, h)
			url := tc.scheme + "://" + b.Addrs()[0].String()
			withTLS := func(o *mqttv3.ClientOptions) { o.SetTLSConfig(&tls.Config{RootCAs: pool}) }
			sub := subscribeV3(t, dialV3(t, url, "sub", withTLS), "t/#", 1)
			publishV3(t, dialV3(t, url, "pub", withTLS), "t/1", 1, false, "over "+tc.typ)
			expectV3(t, sub, "over "+tc.typ)
			checkMessages(t, h, Message{ClientID: "pub", Topic: "t/1", Payload: []byte("over " + tc.typ), QoS: 1, ProtocolVersion: 4})
		})
	}
}

func TestPlainClientOnTLSListenerTimesOut(t *testing.T) {
	certFile, keyFile, _ := selfSignedCert(t)
	b := startBroker(t, Config{
		Listeners:      []Listener{{Type: "tls", Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}},
		ConnectTimeout: 300 * time.Millisecond,
	}, &testHandler{})
	conn, err := net.Dial("tcp", b.tcpAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Say nothing: the broker must close the connection after ConnectTimeout.
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("read = %v, want the broker to close the silent connection", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

const aclUsers = `
[[user]]
name = "sensor-1"
password_hash = "HASH(sensor-1)"
publish = ["sensors/%u/#", "clients/%c"]
subscribe = ["alerts/#"]

[[user]]
name = "ops"
password_hash = "HASH(ops)"
subscribe = ["#"]
`

func TestAuthentication(t *testing.T) {
	path := writeUsersFile(t, aclUsers, map[string]string{"sensor-1": "s3cret", "ops": "ops-pw"})
	b := startBroker(t, Config{UsersFile: path, AuthBackoffMax: -1}, &testHandler{})
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"good password", "sensor-1", "s3cret", true},
		{"wrong password", "sensor-1", "nope", false},
		{"unknown user", "ghost", "s3cret", false},
		{"no credentials", "", "", false},
	} {
		t.Run("v5/"+tc.name, func(t *testing.T) {
			_, err := dialV5(t, b.tcpAddr(), "c-"+tc.user, tc.user, tc.pass)
			if (err == nil) != tc.ok {
				t.Fatalf("connect error %v, want ok=%v", err, tc.ok)
			}
		})
		t.Run("v3/"+tc.name, func(t *testing.T) {
			o := mqttv3.NewClientOptions().AddBroker("tcp://" + b.tcpAddr()).SetClientID("c3-" + tc.user).
				SetUsername(tc.user).SetPassword(tc.pass).SetAutoReconnect(false).SetConnectTimeout(6 * waitTimeout)
			c := mqttv3.NewClient(o)
			tok := c.Connect()
			// A refusal takes a cost-10 bcrypt comparison (the dummy hash), slow under -race.
			if !tok.WaitTimeout(6 * waitTimeout) {
				t.Fatal("no CONNACK")
			}
			if (tok.Error() == nil) != tc.ok {
				t.Fatalf("connect error %v, want ok=%v", tok.Error(), tc.ok)
			}
			if tok.Error() == nil {
				c.Disconnect(50)
			}
		})
	}
	if n := b.Stats().AuthFailures; n != 6 {
		t.Errorf("AuthFailures = %d, want 6", n)
	}
	if !strings.Contains(b.logs.String(), "bad username or password") {
		t.Error("auth failure not logged")
	}
}

func TestPublishACL(t *testing.T) {
	path := writeUsersFile(t, aclUsers, map[string]string{"sensor-1": "s3cret", "ops": "ops-pw"})
	h := &testHandler{}
	b := startBroker(t, Config{UsersFile: path}, h)
	ops := mustDialV5(t, b.tcpAddr(), "ops", "ops", "ops-pw")
	if _, err := ops.subscribe(t, "#", 1); err != nil {
		t.Fatal(err)
	}
	pub := mustDialV5(t, b.tcpAddr(), "dev-7", "sensor-1", "s3cret")
	for _, tc := range []struct {
		topic string
		want  ReasonCode
	}{
		{"sensors/sensor-1/temp", Success}, // %u
		{"clients/dev-7", Success},         // %c
		{"sensors/sensor-2/temp", NotAuthorized},
		{"clients/dev-8", NotAuthorized},
		{"alerts/fire", NotAuthorized}, // subscribe-only
	} {
		resp, _ := pub.publish(t, &paho.Publish{Topic: tc.topic, QoS: 1, Payload: []byte(tc.topic)})
		if resp == nil || resp.ReasonCode != byte(tc.want) {
			t.Errorf("publish %s: response %+v, want 0x%02x", tc.topic, resp, byte(tc.want))
		}
	}
	expectV5(t, ops.received, "sensors/sensor-1/temp")
	expectV5(t, ops.received, "clients/dev-7")
	if n := len(h.messages()); n != 2 {
		t.Errorf("handler saw %d messages; refused publishes must not reach it", n)
	}
	if got := h.messages()[0].Username; got != "sensor-1" {
		t.Errorf("Message.Username = %q", got)
	}

	// MQTT 3.1.1: acknowledged, dropped and counted.
	v3 := dialV3(t, "tcp://"+b.tcpAddr(), "dev-3", func(o *mqttv3.ClientOptions) { o.SetUsername("sensor-1").SetPassword("s3cret") })
	publishV3(t, v3, "sensors/other/temp", 1, false, "denied")
	publishV3(t, v3, "sensors/sensor-1/temp", 1, false, "allowed")
	expectV5(t, ops.received, "allowed")
	if n := b.Stats().Rejected[NotAuthorized]; n != 4 {
		t.Errorf("Rejected[not_authorized] = %d, want 4", n)
	}
}

func TestSubscribeACL(t *testing.T) {
	path := writeUsersFile(t, aclUsers, map[string]string{"sensor-1": "s3cret", "ops": "ops-pw"})
	b := startBroker(t, Config{UsersFile: path}, &testHandler{})
	c := mustDialV5(t, b.tcpAddr(), "dev-1", "sensor-1", "s3cret")
	for _, tc := range []struct {
		filter string
		want   byte
	}{
		{"alerts/#", 1},
		{"alerts/fire", 1},
		{"alerts/+/x", 1},
		{"#", 0x87},
		{"sensors/sensor-1/temp", 0x87},
		{"$SYS/#", 0x87},
	} {
		suback, _ := c.subscribe(t, tc.filter, 1)
		if suback == nil || len(suback.Reasons) != 1 || suback.Reasons[0] != tc.want {
			t.Errorf("subscribe %s: suback %+v, want 0x%02x", tc.filter, suback, tc.want)
		}
	}
	v3 := dialV3(t, "tcp://"+b.tcpAddr(), "dev-3", func(o *mqttv3.ClientOptions) { o.SetUsername("sensor-1").SetPassword("s3cret") })
	tok := v3.Subscribe("#", 1, nil)
	tok.WaitTimeout(waitTimeout)
	if st, ok := tok.(*mqttv3.SubscribeToken); !ok || st.Result()["#"] != 0x80 {
		t.Errorf("v3 subscribe # result %v, want 0x80", tok.(*mqttv3.SubscribeToken).Result())
	}
	if n := b.Stats().SubscribeRefused; n != 4 {
		t.Errorf("SubscribeRefused = %d, want 4", n)
	}
}

func TestNewValidation(t *testing.T) {
	users := writeUsersFile(t, aclUsers, map[string]string{"sensor-1": "a", "ops": "b"})
	certFile, keyFile, _ := selfSignedCert(t)
	tcp := func(addr string) []Listener { return []Listener{{Type: "tcp", Address: addr}} }
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // "" = valid
	}{
		{"loopback v4 anonymous", Config{Listeners: tcp("127.0.0.1:1883")}, ""},
		{"loopback v6 anonymous", Config{Listeners: tcp("[::1]:1883")}, ""},
		{"localhost anonymous", Config{Listeners: tcp("localhost:1883")}, ""},
		{"all interfaces anonymous", Config{Listeners: tcp("0.0.0.0:1883")}, "non-loopback"},
		{"empty host anonymous", Config{Listeners: tcp(":1883")}, "non-loopback"},
		{"LAN IP anonymous", Config{Listeners: tcp("192.168.1.10:1883")}, "non-loopback"},
		{"LAN IP allow_anonymous", Config{Listeners: tcp("192.168.1.10:1883"), AllowAnonymous: true}, ""},
		{"all interfaces with users", Config{Listeners: tcp("0.0.0.0:1883"), UsersFile: users}, ""},
		{"no listeners", Config{}, "no listeners"},
		{"unknown type", Config{Listeners: []Listener{{Type: "quic", Address: "127.0.0.1:1"}}}, `listeners[0] (quic 127.0.0.1:1): unknown listener type "quic"`},
		{"bad port", Config{Listeners: tcp("127.0.0.1:mqtt")}, `port "mqtt"`},
		{"missing port", Config{Listeners: tcp("127.0.0.1")}, "missing port"},
		{"tls without cert", Config{Listeners: []Listener{{Type: "tls", Address: "127.0.0.1:0"}}}, "needs both cert_file and key_file"},
		{"tcp with cert", Config{Listeners: []Listener{{Type: "tcp", Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}}}, "use tls or wss"},
		{"missing cert file", Config{Listeners: []Listener{{Type: "wss", Address: "127.0.0.1:0", CertFile: "/nonexistent/cert.pem", KeyFile: keyFile}}}, "/nonexistent/cert.pem"},
		{"key is not a key", Config{Listeners: []Listener{{Type: "tls", Address: "127.0.0.1:0", CertFile: certFile, KeyFile: certFile}}}, "with key " + certFile},
		{"missing users file", Config{Listeners: tcp("127.0.0.1:0"), UsersFile: "/nonexistent/users.toml"}, "/nonexistent/users.toml"},
		{"negative session expiry", Config{Listeners: tcp("127.0.0.1:0"), SessionExpiry: -time.Second}, "session expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, &testHandler{}, slog.New(slog.DiscardHandler))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("New error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestRunLifecycle(t *testing.T) {
	b, err := New(Config{Listeners: []Listener{{Type: "tcp", Address: "127.0.0.1:0"}, {Type: "ws", Address: "127.0.0.1:0"}}},
		&testHandler{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if b.Addrs() != nil {
		t.Error("Addrs before Ready should be nil")
	}
	if err := b.Publish("a", nil, 0); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Publish before Run = %v, want ErrNotRunning", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-b.Ready()
	dialV3(t, "tcp://"+b.Addrs()[0].String(), "c", nil) // a connected client must not block shutdown
	if err := b.Run(ctx); !errors.Is(err, ErrRunTwice) {
		t.Errorf("second Run = %v, want ErrRunTwice", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after cancel", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel")
	}
	if err := b.Publish("a", nil, 0); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Publish after Run = %v, want ErrNotRunning", err)
	}
	if err := b.Run(context.Background()); !errors.Is(err, ErrRunTwice) {
		t.Errorf("Run after stop = %v, want ErrRunTwice", err)
	}
}

func TestRunBindError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	b, err := New(Config{Listeners: []Listener{{Type: "tcp", Address: "127.0.0.1:0"}, {Type: "tcp", Address: taken.Addr().String()}}},
		&testHandler{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = b.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("Run = %v, want a bind error naming %s", err, taken.Addr())
	}
}

func TestShutdownWithBlockedHandler(t *testing.T) {
	// A Wait blocked until ctx is done must not hang shutdown, and its failure must not be
	// acknowledged to the client.
	h := &blockingHandler{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b, err := New(Config{Listeners: []Listener{{Type: "tcp", Address: "127.0.0.1:0"}}}, h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-b.Ready()
	c := mustDialV5(t, b.Addrs()[0].String(), "pub", "", "")
	acked := make(chan *paho.PublishResponse, 1)
	go func() {
		resp, _ := c.publish(t, &paho.Publish{Topic: "a", QoS: 1, Payload: []byte("x")})
		acked <- resp
	}()
	<-h.entered
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if resp := <-acked; resp != nil {
		t.Fatalf("client got an ack (%+v) for a message the handler never accepted", resp)
	}
}

func TestLocalPublish(t *testing.T) {
	h := &testHandler{}
	b := startBroker(t, Config{}, h)
	sub := mustDialV5(t, b.tcpAddr(), "sub", "", "")
	if _, err := sub.subscribe(t, "out/#", 1); err != nil {
		t.Fatal(err)
	}
	err := b.Publish("out/1", []byte("from overlay"), 1,
		WithUserProperties(UserProperty{"stream", "0xabc/x"}), WithContentType("application/json"), WithPayloadFormatUTF8())
	if err != nil {
		t.Fatal(err)
	}
	m := expectV5(t, sub.received, "from overlay")
	if m.QoS != 1 || m.Properties == nil || m.Properties.ContentType != "application/json" ||
		m.Properties.User.Get("stream") != "0xabc/x" || m.Properties.PayloadFormat == nil || *m.Properties.PayloadFormat != 1 {
		t.Errorf("delivered %+v props %+v", m, m.Properties)
	}
	if err := b.Publish("out/retained", []byte("r"), 0, Retain()); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.subscribe(t, "out/retained", 0); err != nil {
		t.Fatal(err)
	}
	expectV5(t, sub.received, "r") // live delivery (subscribed to out/#)
	expectV5(t, sub.received, "r") // retained, on the new subscription
	if n := len(h.messages()); n != 0 {
		t.Errorf("handler saw %d local publishes", n)
	}
	for _, topic := range []string{"", "a/+", "a/#", "$SYS/x"} {
		if err := b.Publish(topic, nil, 0); err == nil {
			t.Errorf("Publish(%q) accepted", topic)
		}
	}
	if err := b.Publish("a", nil, 3); err == nil {
		t.Error("Publish with qos 3 accepted")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	b := startBroker(t, Config{Registerer: reg}, &testHandler{decide: rejectPayload(QuotaExceeded)})
	pub := mustDialV5(t, b.tcpAddr(), "pub", "", "")
	for _, p := range []string{"ok", "reject", "ok"} {
		_, _ = pub.publish(t, &paho.Publish{Topic: "t", QoS: 1, Payload: []byte(p)})
	}
	got := gather(t, reg)
	for name, want := range map[string]float64{
		"tributary_broker_clients_connected":                      1,
		"tributary_broker_publish_received_total":                 3,
		"tributary_broker_publish_accepted_total":                 2,
		"tributary_broker_publish_rejected_total{quota_exceeded}": 1,
		"tributary_broker_publish_rejected_total{not_authorized}": 0,
		"tributary_broker_publish_wait_failed_total":              0,
		"tributary_broker_auth_failures_total":                    0,
		"tributary_broker_subscribe_refused_total":                0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}

// gather returns every sample as "name" or "name{label value}" -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if len(m.GetLabel()) > 0 {
				key += "{" + m.GetLabel()[0].GetValue() + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func TestShutdownDuringClientChurn(t *testing.T) {
	// Stopping while clients connect and disconnect must not hang (mochi's own listener-close
	// deadlocks against a concurrent Clients.Add or Delete, mochi-mqtt/server#488), and every
	// connected MQTT 5 client is told the server is shutting down (the listener used to close
	// the sockets while the DISCONNECTs were still queued).
	for round := range 5 {
		b, stop := launchBroker(t, Config{}, &testHandler{})
		addr := b.tcpAddr()
		reasons := make(chan byte, 8)
		for i := range cap(reasons) {
			dialNotified(t, addr, fmt.Sprintf("stay-%d-%d", round, i), reasons)
		}
		churnCtx, stopChurn := context.WithCancel(context.Background())
		var churn sync.WaitGroup
		for i := range 4 {
			churn.Add(1)
			go func() {
				defer churn.Done()
				churnClients(churnCtx, addr, fmt.Sprintf("churn-%d-%d", round, i))
			}()
		}
		time.Sleep(20 * time.Millisecond)
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * waitTimeout):
			t.Fatalf("round %d: broker did not stop while clients churned", round)
		}
		stopChurn()
		churn.Wait()
		for range cap(reasons) {
			select {
			case rc := <-reasons:
				if rc != packets.ErrServerShuttingDown.Code {
					t.Errorf("round %d: DISCONNECT reason %#x, want %#x", round, rc, packets.ErrServerShuttingDown.Code)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("round %d: a connected client was not sent DISCONNECT", round)
			}
		}
	}
}

// dialNotified connects an MQTT 5 client that reports the reason of a server DISCONNECT.
func dialNotified(t *testing.T, addr, id string, reasons chan<- byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, PacketTimeout: waitTimeout,
		OnServerDisconnect: func(d *paho.Disconnect) { reasons <- d.ReasonCode }})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { <-c.Done() })
}

// churnClients connects and disconnects clean MQTT 5 sessions (each adds and deletes a mochi
// client) until ctx is done or the broker stops answering.
func churnClients(ctx context.Context, addr, id string) {
	for ctx.Err() == nil {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, PacketTimeout: time.Second})
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = c.Connect(cctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
		cancel()
		if err != nil {
			_ = conn.Close()
			return
		}
		_ = c.Disconnect(&paho.Disconnect{})
		<-c.Done()
	}
}

func TestListenerCloseBypassesMochiCloseFn(t *testing.T) {
	// mochi's CloseFn lists clients with Clients.GetByListener, which can deadlock
	// (mochi-mqtt/server#488): a listener disconnects its clients through the Broker instead.
	var closed []string
	l := newListener("tcp-0", Listener{Type: "tcp", Address: "127.0.0.1:0"}, nil, time.Second, writeLimits{},
		listenerCalls{fail: func(err error) { t.Error(err) }, closeClients: func(id string) { closed = append(closed, id) }})
	if err := l.Init(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	go l.Serve(func(string, net.Conn) error { return nil })
	l.Close(func(string) { t.Error("listener called mochi's CloseFn") })
	<-l.served
	if !slices.Equal(closed, []string{"tcp-0"}) {
		t.Errorf("closeClients called for %q, want [tcp-0]", closed)
	}
}
