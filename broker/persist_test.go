package broker

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqttv3 "github.com/eclipse/paho.mqtt.golang"
)

// memSessions is a SessionStore in memory that outlives the brokers of one test, as the
// gateway's store outlives a graceful restart. (Crashes are tested with the real binary in
// cmd/bridge.)
type memSessions struct {
	mu      sync.Mutex
	records map[string][]byte
	commits int
}

func newMemSessions() *memSessions { return &memSessions{records: make(map[string][]byte)} }

func (m *memSessions) ScanSessions(prefix string, fn func(string, []byte) error) error {
	m.mu.Lock()
	var keys []string
	for k := range m.records {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = m.records[k]
	}
	m.mu.Unlock()
	for i, k := range keys {
		if err := fn(k, vals[i]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memSessions) CommitSessions(_ context.Context, writes map[string][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commits++
	for k, v := range writes {
		if v == nil {
			delete(m.records, k)
		} else {
			m.records[k] = append([]byte(nil), v...)
		}
	}
	return nil
}

func (m *memSessions) count(prefix string) int {
	n := 0
	_ = m.ScanSessions(prefix, func(string, []byte) error { n++; return nil })
	return n
}

// runStoppable runs a broker with the given config until stopped or the test ends.
func runStoppable(t *testing.T, cfg Config) (*Broker, func()) {
	t.Helper()
	r, stop := launchBroker(t, cfg, &testHandler{})
	return r.Broker, stop
}

// consumer is a persistent-session QoS 1 subscriber of either protocol version that records
// the payloads it gets.
type consumer struct {
	t       *testing.T
	version int
	id      string
	mu      sync.Mutex
	got     []string
	close   func()
}

func (c *consumer) add(p string) {
	c.mu.Lock()
	c.got = append(c.got, p)
	c.mu.Unlock()
}

func (c *consumer) payloads() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// connect opens a persistent session (first: start afresh) and subscribes to filter, failing
// on any SUBACK error.
func (c *consumer) connect(addr, filter string, first bool) {
	c.t.Helper()
	if c.version == 4 {
		o := mqttv3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(c.id).SetProtocolVersion(4).
			SetCleanSession(first).SetAutoReconnect(false).SetOrderMatters(true).SetConnectTimeout(waitTimeout).
			SetDefaultPublishHandler(func(_ mqttv3.Client, m mqttv3.Message) { c.add(string(m.Payload())) })
		cl := mqttv3.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			c.t.Fatalf("v3 connect: %v", tok.Error())
		}
		if first { // a clean session ends at disconnect: open the persistent one
			cl.Disconnect(50)
			o.SetCleanSession(false)
			cl = mqttv3.NewClient(o)
			if tok := cl.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
				c.t.Fatalf("v3 connect: %v", tok.Error())
			}
		}
		tok := cl.Subscribe(filter, 1, nil)
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			c.t.Fatalf("v3 subscribe: %v", tok.Error())
		}
		if codes := tok.(*mqttv3.SubscribeToken).Result(); codes[filter] != 1 {
			c.t.Fatalf("v3 SUBACK %#x, want granted QoS 1", codes[filter])
		}
		c.close = func() { cl.Disconnect(50) }
		return
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{
		ClientID: c.id, Conn: conn, PacketTimeout: waitTimeout,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.add(string(pr.Packet.Payload)); return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	expiry := uint32(3600)
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: c.id, KeepAlive: 30, CleanStart: first,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		c.t.Fatalf("v5 connect: %v", err)
	}
	sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		c.t.Fatalf("v5 SUBACK %v, %v: want granted QoS 1", sa, err)
	}
	c.close = func() {
		_ = cl.Disconnect(&paho.Disconnect{})
		<-cl.Done()
	}
}

// wait waits until the consumer has n payloads (or more).
func (c *consumer) wait(n int) []string {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got := c.payloads(); len(got) >= n {
			time.Sleep(100 * time.Millisecond) // duplicates would arrive now
			return c.payloads()
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("consumer %s got %d messages, want %d", c.id, len(c.payloads()), n)
	return nil
}

func publishSeq(t *testing.T, b *Broker, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := b.Publish("sensors/x", []byte(strconv.Itoa(i)), 1, WithMark("chain", []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSeq checks that got is exactly from..to, in order, each once.
func checkSeq(t *testing.T, got []string, from, to int) {
	t.Helper()
	want := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("consumer got %d messages %s, want %d in order, each once", len(got), summarize(got), len(want))
	}
}

func summarize(s []string) string {
	if len(s) > 30 {
		return fmt.Sprintf("%v … %v", s[:15], s[len(s)-15:])
	}
	return fmt.Sprint(s)
}

// TestPersistentSessionAcrossRestart: messages queued for an offline persistent session before
// and after a graceful restart arrive once each, in order, and resubscribing gets no 0x91.
func TestPersistentSessionAcrossRestart(t *testing.T) {
	for _, version := range []int{4, 5} {
		t.Run(fmt.Sprintf("mqtt%d", version), func(t *testing.T) {
			store := newMemSessions()
			cfg := Config{Sessions: store}
			b, stop := runStoppable(t, cfg)
			c := &consumer{t: t, version: version, id: "consumer"}
			c.connect(b.Addrs()[0].String(), "sensors/#", true)
			c.close()
			publishSeq(t, b, 1, 300)
			stop()
			if n := store.count(prefixQueued); n != 300 {
				t.Fatalf("%d messages stored after the restart, want 300", n)
			}

			b, _ = runStoppable(t, cfg)
			publishSeq(t, b, 301, 600)
			c.connect(b.Addrs()[0].String(), "sensors/#", false)
			checkSeq(t, c.wait(600), 1, 600)
			c.close()
			if v, ok, err := b.Mark("chain"); err != nil || !ok || string(v) != "600" {
				t.Fatalf("mark = %q, %v, %v; want 600", v, ok, err)
			}
			waitStored(t, b, store, 0)
		})
	}
}

// waitStored waits until the store holds n queued messages (PUBACKs are processed
// asynchronously to the client's view).
func waitStored(t *testing.T, b *Broker, store *memSessions, n int) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); ; {
		if err := b.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := store.count(prefixQueued)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages stored, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconnectWhilePublishing: a connected persistent consumer gets messages in order while a
// reconnect is interleaved with publishing.
func TestReconnectWhilePublishing(t *testing.T) {
	for _, version := range []int{4, 5} {
		t.Run(fmt.Sprintf("mqtt%d", version), func(t *testing.T) {
			b, _ := runStoppable(t, Config{Sessions: newMemSessions(), MaxInflight: 4000})
			c := &consumer{t: t, version: version, id: "consumer"}
			addr := b.Addrs()[0].String()
			c.connect(addr, "sensors/#", true)
			done := make(chan struct{})
			go func() {
				defer close(done)
				publishSeq(t, b, 1, 2000)
			}()
			time.Sleep(20 * time.Millisecond)
			c.close()
			time.Sleep(20 * time.Millisecond)
			c.connect(addr, "sensors/#", false)
			<-done
			got := dedupe(c.wait(2000))
			// The first connection may have received messages whose PUBACK was lost: at least
			// once across a disconnect. A message published in the instant of the takeover
			// (handed over from the old connection after the replay was listed) may come a few
			// places late: counted, bounded, never lost.
			if len(got) != 2000 {
				t.Fatalf("got %d distinct messages, want 2000", len(got))
			}
			if late := displaced(got); late > 1 {
				t.Fatalf("%d messages out of place: %s", late, summarize(got))
			} else if late == 1 {
				t.Log("one message handed over during the takeover came late")
			}
			if st := b.SessionStats(); st.DroppedForMessages+st.DroppedForBytes > 0 {
				t.Fatalf("stats %+v: messages dropped", st)
			}
		})
	}
}

// displaced counts the places where got (distinct decimal numbers) goes backwards: 0 when it
// is in order, 1 for a single message moved.
func displaced(got []string) int {
	n := 0
	for i := 1; i < len(got); i++ {
		prev, _ := strconv.Atoi(got[i-1])
		cur, _ := strconv.Atoi(got[i])
		if cur < prev {
			n++
		}
	}
	return n
}

// dedupe drops repeats of a payload already seen.
func dedupe(s []string) []string {
	seen := make(map[string]bool)
	var out []string
	for _, p := range s {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// TestSessionLimits: a session over its message or byte limit drops its oldest messages,
// counted; the rest arrive in order.
func TestSessionLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        Config
		keep       int
		byMessages bool
	}{
		{"messages", Config{MaxInflight: 50}, 50, true},
		{"bytes", Config{MaxSessionBytes: 40 * int64(len("sensors/x")+3)}, 40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemSessions()
			tc.cfg.Sessions = store
			b, _ := runStoppable(t, tc.cfg)
			c := &consumer{t: t, version: 4, id: "consumer"}
			c.connect(b.Addrs()[0].String(), "sensors/#", true)
			c.close()
			publishSeq(t, b, 100, 299) // three-digit payloads
			st := b.SessionStats()
			dropped := st.DroppedForBytes
			if tc.byMessages {
				dropped = st.DroppedForMessages
			}
			if want := uint64(200 - tc.keep); dropped != want {
				t.Fatalf("dropped %d (stats %+v), want %d", dropped, st, want)
			}
			c.connect(b.Addrs()[0].String(), "sensors/#", false)
			checkSeq(t, c.wait(tc.keep), 300-tc.keep, 299)
		})
	}
}

// TestCleanStartDiscardsSession: a clean start drops what was stored for the client.
func TestCleanStartDiscardsSession(t *testing.T) {
	store := newMemSessions()
	b, _ := runStoppable(t, Config{Sessions: store})
	c := &consumer{t: t, version: 4, id: "consumer"}
	c.connect(b.Addrs()[0].String(), "sensors/#", true)
	c.close()
	publishSeq(t, b, 1, 10)
	c.connect(b.Addrs()[0].String(), "sensors/#", true)
	c.close()
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := store.count(prefixQueued); n != 0 {
		t.Fatalf("%d messages stored after a clean start, want 0", n)
	}
}
