package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttv3 "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

// gatedHandler accepts messages with a Wait that blocks until the test releases that payload's
// gate (or ctx is done); payloads in refuse or durable are answered without a Wait.
type gatedHandler struct {
	refuse  map[string]ReasonCode // refused once with this code (guarded by mu)
	durable map[string]bool       // accepted with a nil Wait

	cancelled chan string // payloads whose Wait returned because ctx was done

	mu    sync.Mutex
	calls []string
	gates map[string]chan error
}

func newGatedHandler() *gatedHandler {
	return &gatedHandler{cancelled: make(chan string, 100), gates: map[string]chan error{}}
}

func (h *gatedHandler) HandlePublish(_ context.Context, m *Message) Verdict {
	p := string(m.Payload)
	h.mu.Lock()
	h.calls = append(h.calls, p)
	code, refused := h.refuse[p]
	delete(h.refuse, p)
	h.mu.Unlock()
	if refused {
		return Verdict{Code: code}
	}
	if h.durable[p] {
		return Verdict{Code: Success}
	}
	gate := h.gate(p)
	return Verdict{Code: Success, Wait: func(ctx context.Context) error {
		select {
		case err := <-gate:
			return err
		case <-ctx.Done():
			h.cancelled <- p
			return ctx.Err()
		}
	}}
}

func (h *gatedHandler) gate(payload string) chan error {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.gates[payload]
	if !ok {
		g = make(chan error, 1)
		h.gates[payload] = g
	}
	return g
}

// release makes the (next) Wait for payload return err.
func (h *gatedHandler) release(payload string, err error) { h.gate(payload) <- err }

func (h *gatedHandler) called() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// waitCalls waits until the handler was called n times.
func (h *gatedHandler) waitCalls(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); len(h.called()) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("handler called %d times (%v), want %d", len(h.called()), h.called(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wireLog records the MQTT 3.1.1 PUBLISH and PUBACK packet identifiers crossing a client's
// connections, in wire order.
type wireLog struct {
	mu       sync.Mutex
	sent     packetStream // client to broker
	received packetStream // broker to client
}

type packetStream struct {
	buf      []byte
	publish  []uint16 // identifiers of QoS>0 PUBLISHes
	puback   []uint16
	overflow bool // a remaining length was malformed
}

// feed appends bytes and extracts every complete packet.
func (s *packetStream) feed(p []byte) {
	s.buf = append(s.buf, p...)
	for {
		size, header, ok := s.next()
		if !ok {
			return
		}
		pk := s.buf[header:size]
		switch typ, qos := s.buf[0]>>4, s.buf[0]>>1&3; {
		case typ == 3 && qos > 0 && len(pk) >= 2:
			topicEnd := 2 + (int(pk[0])<<8 | int(pk[1]))
			if len(pk) >= topicEnd+2 {
				s.publish = append(s.publish, uint16(pk[topicEnd])<<8|uint16(pk[topicEnd+1]))
			}
		case typ == 4 && len(pk) >= 2:
			s.puback = append(s.puback, uint16(pk[0])<<8|uint16(pk[1]))
		}
		s.buf = s.buf[size:]
	}
}

// next returns the size of the first packet in buf and the length of its fixed header, if it
// is complete.
func (s *packetStream) next() (size, header int, ok bool) {
	remaining, shift := 0, 0
	for i := 1; i < len(s.buf); i++ {
		if i > 4 {
			s.overflow = true
			return 0, 0, false
		}
		remaining |= int(s.buf[i]&0x7f) << shift
		shift += 7
		if s.buf[i]&0x80 == 0 {
			size = i + 1 + remaining
			return size, i + 1, len(s.buf) >= size
		}
	}
	return 0, 0, false
}

// ids returns the identifiers of the PUBLISHes sent and of the PUBACKs received so far.
func (w *wireLog) ids() (published, acked []uint16) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent.overflow || w.received.overflow {
		panic("wireLog: malformed remaining length")
	}
	return slices.Clone(w.sent.publish), slices.Clone(w.received.puback)
}

type tappedConn struct {
	net.Conn
	log *wireLog
}

func (c tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.log.mu.Lock()
	c.log.received.feed(p[:n])
	c.log.mu.Unlock()
	return n, err
}

func (c tappedConn) Write(p []byte) (int, error) {
	c.log.mu.Lock()
	c.log.sent.feed(p)
	c.log.mu.Unlock()
	return c.Conn.Write(p)
}

// dialTapped connects an MQTT 3.1.1 client whose connections are recorded in the returned log.
func dialTapped(t *testing.T, addr, id string, set func(*mqttv3.ClientOptions)) (mqttv3.Client, *wireLog) {
	t.Helper()
	log := &wireLog{}
	c := dialV3(t, "tcp://"+addr, id, func(o *mqttv3.ClientOptions) {
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqttv3.ClientOptions) (net.Conn, error) {
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				return nil, err
			}
			return tappedConn{conn, log}, nil
		})
		if set != nil {
			set(o)
		}
	})
	return c, log
}

// publishAll publishes payloads as QoS 1 without waiting for acks and returns the tokens.
func publishAll(c mqttv3.Client, topic string, payloads []string) []mqttv3.Token {
	toks := make([]mqttv3.Token, len(payloads))
	for i, p := range payloads {
		toks[i] = c.Publish(topic, 1, false, p)
	}
	return toks
}

func waitTokens(t *testing.T, toks []mqttv3.Token) {
	t.Helper()
	for i, tok := range toks {
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("publish %d not acknowledged: %v", i, tok.Error())
		}
	}
}

// expectNoAcks checks that no PUBACK arrives within a moment.
func expectNoAcks(t *testing.T, w *wireLog, want int) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // time for a wrongly sent ack to cross loopback
	if _, acked := w.ids(); len(acked) != want {
		t.Fatalf("%d PUBACKs received (%v), want %d", len(acked), acked, want)
	}
}

// checkAckOrder checks that every PUBLISH was acknowledged once, in publish order.
func checkAckOrder(t *testing.T, w *wireLog) {
	t.Helper()
	published, acked := w.ids()
	if !slices.Equal(published, acked) {
		t.Fatalf("PUBACK order %v, want publish order %v", acked, published)
	}
}

func payloads(n int) []string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = fmt.Sprintf("m%d", i)
	}
	return ps
}

func TestQoS1Pipelined(t *testing.T) {
	for _, tc := range []struct {
		name    string
		publish func(t *testing.T, addr string, ps []string) (*wireLog, func(t *testing.T))
	}{
		{"v3", publishAllV3},
		{"v5", publishAllV5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newGatedHandler()
			h.refuse = map[string]ReasonCode{"m4": NotAuthorized} // 3.1.1: acked and dropped; 5: 0x87
			h.durable = map[string]bool{"m6": true}
			b := startBroker(t, Config{}, h)
			ps := payloads(10)
			wire, waitAcks := tc.publish(t, b.tcpAddr(), ps)

			// Nothing is durable yet, yet all ten reach the handler: the read loop is not blocked.
			h.waitCalls(t, len(ps))
			if got := h.called(); !slices.Equal(got, ps) {
				t.Fatalf("handler calls %v, want %v", got, ps)
			}
			// Later messages become durable first; the refused and the durable one are behind m0 too.
			for _, p := range []string{"m9", "m7", "m5", "m3", "m1", "m8", "m2"} {
				h.release(p, nil)
			}
			expectNoAcks(t, wire, 0)
			h.release("m0", nil)
			waitAcks(t)
			checkAckOrder(t, wire)
			if s := b.Stats(); s.Accepted != 9 || s.Rejected[NotAuthorized] != 1 {
				t.Errorf("stats %+v, want 9 accepted, 1 not authorized", s)
			}
		})
	}
}

// publishAllV3 publishes ps as QoS 1 from an MQTT 3.1.1 client without waiting for acks.
func publishAllV3(t *testing.T, addr string, ps []string) (*wireLog, func(t *testing.T)) {
	c, wire := dialTapped(t, addr, "pub", nil)
	toks := publishAll(c, "t/1", ps)
	return wire, func(t *testing.T) { waitTokens(t, toks) }
}

// publishAllV5 publishes ps as QoS 1 from an MQTT 5 client, each once the previous one is on
// the wire, without waiting for acks; m4 must be refused with NotAuthorized.
func publishAllV5(t *testing.T, addr string, ps []string) (*wireLog, func(t *testing.T)) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	wire := &wireLog{}
	c, err := dialV5Conn(t, tappedConn{conn, wire}, "pub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	responses := make([]chan *paho.PublishResponse, len(ps))
	for i, p := range ps {
		responses[i] = make(chan *paho.PublishResponse, 1)
		go func() {
			resp, _ := c.publish(t, &paho.Publish{Topic: "t/1", QoS: 1, Payload: []byte(p)})
			responses[i] <- resp
		}()
		for deadline := time.Now().Add(waitTimeout); ; time.Sleep(time.Millisecond) {
			if sent, _ := wire.ids(); len(sent) > i {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not sent", p)
			}
		}
	}
	return wire, func(t *testing.T) {
		for i, ch := range responses {
			want := byte(Success)
			if ps[i] == "m4" {
				want = byte(NotAuthorized)
			}
			if resp := <-ch; resp == nil || resp.ReasonCode != want {
				t.Errorf("%s: publish response %+v, want reason 0x%02x", ps[i], resp, want)
			}
		}
	}
}

func TestQuotaExceededBehindPendingMQTT311(t *testing.T) {
	// A refusal that closes the connection waits for the PUBACKs of earlier messages.
	h := newGatedHandler()
	h.refuse = map[string]ReasonCode{"m1": QuotaExceeded}
	b := startBroker(t, Config{}, h)
	lost := make(chan error, 1)
	pub, wire := dialTapped(t, b.tcpAddr(), "pub", func(o *mqttv3.ClientOptions) {
		o.SetCleanSession(false).SetConnectionLostHandler(func(_ mqttv3.Client, err error) { lost <- err })
	})
	toks := publishAll(pub, "t/1", payloads(2))
	h.waitCalls(t, 2)
	expectNoAcks(t, wire, 0)
	h.release("m0", nil)
	select {
	case <-lost:
	case <-time.After(waitTimeout):
		t.Fatal("client not disconnected")
	}
	waitTokens(t, toks[:1])
	if published, acked := wire.ids(); !slices.Equal(acked, published[:1]) {
		t.Fatalf("PUBACKs %v for PUBLISHes %v, want only the first acknowledged", acked, published)
	}
	assertRejected(t, b, QuotaExceeded, "pub", "t/1")

	h.release("m1", nil)
	if tok := pub.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("reconnect: %v", tok.Error())
	}
	h.waitCalls(t, 3)
	if got := h.called(); !slices.Equal(got, []string{"m0", "m1", "m1"}) {
		t.Fatalf("handler calls %v, want m1 resent after reconnecting", got)
	}
}

func TestWaitFailureClosesWithoutAck(t *testing.T) {
	h := newGatedHandler()
	b := startBroker(t, Config{}, h)
	sub := subscribeV3(t, dialV3(t, "tcp://"+b.tcpAddr(), "sub", nil), "t/#", 1)
	lost := make(chan error, 1)
	pub, wire := dialTapped(t, b.tcpAddr(), "pub", func(o *mqttv3.ClientOptions) {
		o.SetCleanSession(false).SetConnectionLostHandler(func(_ mqttv3.Client, err error) { lost <- err })
	})
	tok := pub.Publish("t/1", 1, false, "reading")
	h.waitCalls(t, 1)
	h.release("reading", errors.New("disk full"))
	select {
	case <-lost:
	case <-time.After(waitTimeout):
		t.Fatal("client not disconnected after a failed Wait")
	}
	if _, acked := wire.ids(); len(acked) != 0 || (tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil) {
		t.Fatalf("publish acknowledged (PUBACKs %v) although Wait failed", acked)
	}
	if n := b.Stats().WaitFailed; n != 1 {
		t.Errorf("Stats().WaitFailed = %d, want 1", n)
	}
	if logs := b.logs.String(); !strings.Contains(logs, "not stored durably") || !strings.Contains(logs, "disk full") {
		t.Errorf("wait failure not logged:\n%s", logs)
	}

	// The kept session resends the reading; this time it becomes durable.
	h.release("reading", nil)
	if tok := pub.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("reconnect: %v", tok.Error())
	}
	h.waitCalls(t, 2)
	if got := h.called(); !slices.Equal(got, []string{"reading", "reading"}) {
		t.Fatalf("handler calls %v, want the reading twice", got)
	}
	expectV3(t, sub, "reading") // delivered once, after it became durable
	publishV3Durable(t, h, pub, "after")
	expectV3(t, sub, "after")
}

// publishV3Durable publishes payload and lets its Wait succeed.
func publishV3Durable(t *testing.T, h *gatedHandler, c mqttv3.Client, payload string) {
	t.Helper()
	h.release(payload, nil)
	publishV3(t, c, "t/1", 1, false, payload)
}

func TestDeliveryAfterWait(t *testing.T) {
	h := newGatedHandler()
	b := startBroker(t, Config{}, h)
	sub := mustDialV5(t, b.tcpAddr(), "sub", "", "")
	if _, err := sub.subscribe(t, "t/#", 1); err != nil {
		t.Fatal(err)
	}
	pub := mustDialV5(t, b.tcpAddr(), "pub", "", "")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// The publisher's own NoLocal subscription must not see its message.
	if _, err := pub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t/#", QoS: 1, NoLocal: true}}}); err != nil {
		t.Fatal(err)
	}
	acked := make(chan *paho.PublishResponse, 1)
	go func() {
		resp, _ := pub.publish(t, &paho.Publish{
			Topic: "t/1", QoS: 1, Retain: true, Payload: []byte("21.5"),
			Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "unit", Value: "C"}}},
		})
		acked <- resp
	}()
	h.waitCalls(t, 1)
	select {
	case m := <-sub.received:
		t.Fatalf("subscriber got %q before Wait returned", m.Payload)
	case <-time.After(200 * time.Millisecond):
	}
	assertNotRetained(t, b, "t/1")
	expectV5(t, sub.received, "marker")
	expectV5(t, pub.received, "marker") // from the broker, so NoLocal does not apply

	h.release("21.5", nil)
	m := expectV5(t, sub.received, "21.5")
	if m.QoS != 1 || m.Properties == nil || m.Properties.ContentType != "text/plain" || m.Properties.User.Get("unit") != "C" {
		t.Errorf("delivered %+v with properties %+v", m, m.Properties)
	}
	if resp := <-acked; resp == nil || resp.ReasonCode != 0 {
		t.Fatalf("publish response %+v, want success", resp)
	}
	late := mustDialV5(t, b.tcpAddr(), "late2", "", "")
	if _, err := late.subscribe(t, "t/1", 1); err != nil {
		t.Fatal(err)
	}
	expectV5(t, late.received, "21.5") // retained once durable

	if err := b.Publish("t/2", []byte("marker2"), 1); err != nil {
		t.Fatal(err)
	}
	expectV5(t, pub.received, "marker2") // not preceded by its own message
}

func TestDisconnectWithOutstandingWaits(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(c mqttv3.Client, conn *tapCloser)
	}{
		{"DISCONNECT", func(c mqttv3.Client, _ *tapCloser) { c.Disconnect(0) }},
		{"connection dropped", func(_ mqttv3.Client, conn *tapCloser) { conn.close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newGatedHandler()
			b := startBroker(t, Config{}, h)
			before := goleak.IgnoreCurrent()
			conns := &tapCloser{}
			pub, wire := dialTapped(t, b.tcpAddr(), "pub", func(o *mqttv3.ClientOptions) {
				open := o.CustomOpenConnectionFn
				o.SetCustomOpenConnectionFn(func(u *url.URL, o mqttv3.ClientOptions) (net.Conn, error) {
					conn, err := open(u, o)
					conns.set(conn)
					return conn, err
				})
			})
			publishAll(pub, "t/1", payloads(5))
			h.waitCalls(t, 5)

			tc.end(pub, conns)
			select {
			case p := <-h.cancelled:
				if p != "m0" {
					t.Errorf("cancelled Wait of %s, want the oldest, m0", p)
				}
			case <-time.After(waitTimeout):
				t.Fatal("outstanding Wait not cancelled after the client left")
			}
			for _, p := range payloads(5) {
				h.release(p, nil) // too late: the queue must not ack or deliver anything now
			}
			pub.Disconnect(0) // paho's own goroutines; a no-op after DISCONNECT
			goleak.VerifyNone(t, before)
			if _, acked := wire.ids(); len(acked) != 0 {
				t.Errorf("PUBACKs %v written for a client that left", acked)
			}
			if n := b.Stats().WaitFailed; n != 0 {
				t.Errorf("Stats().WaitFailed = %d; a departed client is not a storage failure", n)
			}
		})
	}
}

// tapCloser remembers a client's current connection so that a test can drop it.
type tapCloser struct {
	mu   sync.Mutex
	conn net.Conn
}

func (c *tapCloser) set(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
}

func (c *tapCloser) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.conn.Close()
}

func TestBackpressureAtReceiveMaximum(t *testing.T) {
	h := newGatedHandler()
	b := startBroker(t, Config{ReceiveMaximum: 4}, h)
	pub, wire := dialTapped(t, b.tcpAddr(), "pub", nil) // MQTT 3.1.1: ignores the receive maximum
	ps := payloads(10)
	toks := publishAll(pub, "t/1", ps)

	h.waitCalls(t, 4)
	expectNoAcks(t, wire, 0)
	if n := len(h.called()); n != 4 {
		t.Fatalf("handler called %d times with 4 messages outstanding, want the read loop blocked at 4", n)
	}
	h.release("m0", nil)
	h.waitCalls(t, 5)
	expectNoAcks(t, wire, 1)
	if n := len(h.called()); n != 5 {
		t.Fatalf("handler called %d times after one ack, want 5", n)
	}
	for _, p := range ps[1:] {
		h.release(p, nil)
	}
	waitTokens(t, toks)
	checkAckOrder(t, wire)
}
