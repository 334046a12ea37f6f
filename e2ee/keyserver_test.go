package e2ee

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/streamr"
)

// publishers is a PublishPolicy of listed users, like the overlay's
// allow list.
type publishers [][]byte

func (p publishers) MayPublishAt(_ context.Context, _ streamr.StreamID, user []byte, _ time.Time) (bool, error) {
	for _, u := range p {
		if bytes.Equal(u, user) {
			return true, nil
		}
	}
	return false, nil
}

// TestKeyServerAnswersForOfflinePublisher: a key server S that A lets
// have its keys collects them from the messages it stores (the first by
// key exchange, the rotated one in band), keeps them durably, and once A
// is gone answers B, which lets S publish, with S's own signature. C,
// not in S's list, is refused and counted; a key asked for on another
// stream is not handed out; S reopened still answers.
func TestKeyServerAnswersForOfflinePublisher(t *testing.T) {
	ka, ks, kb, kc := genKey(t), genKey(t), genKey(t), genKey(t)
	sp := ownedPart(ka, "secret")
	other := ownedPart(ka, "other")
	part := &partition{}
	a := newMember(t, part, sp, t.TempDir(), ka, Config{Subscribers: Subscribers{string(sp.Stream): {ks.PublisherID()}}, RotateEvery: time.Hour})
	sDir := t.TempDir()
	serve := Config{
		ServeParts:    []streamr.StreamPartID{sp, other},
		KeyRequesters: Subscribers{string(sp.Stream): {kb.PublisherID()}, string(other.Stream): {kc.PublisherID()}},
	}
	s := newMember(t, part, sp, sDir, ks, serve)
	s.x.Attach(other, part)

	now := time.Now()
	m1 := content(t, a, sp, 1, `{"n":1}`, now)
	m2 := content(t, a, sp, 2, `{"n":2}`, now.Add(2*time.Hour)) // announces the next key
	m3 := content(t, a, sp, 3, `{"n":3}`, now.Add(2*time.Hour))
	s.x.Collect(context.Background(), m1) // fetched from A
	waitFor(t, func() bool { return testutil.ToFloat64(s.x.metrics.collected.WithLabelValues("ok")) == 1 })
	s.x.Collect(context.Background(), m2) // announces the next key
	s.x.Collect(context.Background(), m3) // under it: nothing to ask
	if n := testutil.ToFloat64(s.x.metrics.collected.WithLabelValues("ok")); n != 2 {
		t.Fatalf("S collected %v keys, want 2", n)
	}
	part.wg.Wait()
	if n := testutil.ToFloat64(a.x.metrics.requests.WithLabelValues("answered")); n != 1 {
		t.Fatalf("A answered %v requests, want 1: S follows the rotation without asking", n)
	}

	// A goes offline; S reopens on its store.
	part.mu.Lock()
	part.members = nil
	part.mu.Unlock()
	s.db.Close()
	s = newMember(t, part, sp, sDir, ks, serve)
	s.x.Attach(other, part)

	b := newMember(t, part, sp, t.TempDir(), kb, Config{KeyType: streamr.AsymmetricMLKEM, KeyServers: publishers{ks.PublisherID()}})
	for i, m := range []*streamr.StreamMessage{m1, m3} {
		got, err := b.x.DecryptWait(context.Background(), m)
		if err != nil {
			t.Fatalf("B, message %d: %v", i, err)
		}
		if want := []string{`{"n":1}`, `{"n":3}`}[i]; string(got.Content().Content) != want {
			t.Fatalf("B decrypted %q, want %q", got.Content().Content, want)
		}
	}
	if _, ok, _ := b.x.Decrypt(context.Background(), m2); !ok {
		t.Fatal("B does not hold the key S gave it under A's ID")
	}

	c := newMember(t, part, sp, t.TempDir(), kc, Config{KeyRequestTimeout: 300 * time.Millisecond, KeyServers: publishers{ks.PublisherID()}})
	if _, err := c.x.DecryptWait(context.Background(), m1); !errors.Is(err, ErrNoKey) {
		t.Fatalf("C, not in S's list: %v, want ErrNoKey", err)
	}
	// C may read the other stream: a key of this one asked for there is
	// not given out.
	c.x.Attach(other, part)
	moved := *m1
	moved.ID.StreamID = other.Stream
	if _, err := c.x.DecryptWait(context.Background(), &moved); !errors.Is(err, ErrNoKey) {
		t.Fatalf("C asking on another stream: %v, want ErrNoKey", err)
	}
	part.wg.Wait()
	for result, want := range map[string]float64{"answered": 2, "refused": 1, "no_keys": 1} {
		wantCount(t, "S's "+result+" requests", s.x.metrics.requests, result, want)
	}
}

// TestKeyResponseFromUnauthorisedServerRefused: a gateway that holds the
// keys (A gave them to it) but may not publish on the stream answers B;
// B refuses the answer, counts it, and the message times out undelivered.
func TestKeyResponseFromUnauthorisedServerRefused(t *testing.T) {
	ka, ku, kb := genKey(t), genKey(t), genKey(t)
	sp := ownedPart(ka, "secret")
	part := &partition{}
	a := newMember(t, part, sp, t.TempDir(), ka, Config{Subscribers: Subscribers{string(sp.Stream): {ku.PublisherID()}}})
	u := newMember(t, part, sp, t.TempDir(), ku, Config{ServeParts: []streamr.StreamPartID{sp}, KeyRequesters: Subscribers{string(sp.Stream): {kb.PublisherID()}}})
	m1 := content(t, a, sp, 1, `{"n":1}`, time.Now())
	u.x.Collect(context.Background(), m1)
	waitFor(t, func() bool { return testutil.ToFloat64(u.x.metrics.collected.WithLabelValues("ok")) == 1 })
	part.wg.Wait()
	part.mu.Lock()
	part.members = part.members[1:] // A goes offline
	part.mu.Unlock()

	b := newMember(t, part, sp, t.TempDir(), kb, Config{KeyRequestTimeout: 3 * time.Second, KeyServers: publishers{}})
	if _, err := b.x.DecryptWait(context.Background(), m1); !errors.Is(err, ErrNoKey) {
		t.Fatalf("B took a key from a gateway that may not publish: %v", err)
	}
	part.wg.Wait()
	wantCount(t, "U's answered requests", u.x.metrics.requests, "answered", 1)
	wantCount(t, "B's refused key responses", b.x.metrics.decryptFailed, "unauthorised_key_server", 1)
}

// wantCount checks one series of a counter vector.
func wantCount(t *testing.T, what string, vec *prometheus.CounterVec, label string, want float64) {
	t.Helper()
	if n := testutil.ToFloat64(vec.WithLabelValues(label)); n != want {
		t.Errorf("%s: %v, want %v", what, n, want)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyRequestSentAgain: a request that cannot be sent (the partition's
// topic is not there yet, as right after joining) is sent again while its
// message waits, and the message decrypts once it goes out.
func TestKeyRequestSentAgain(t *testing.T) {
	ka, kb := genKey(t), genKey(t)
	sp := ownedPart(ka, "secret")
	part := &partition{}
	a := newMember(t, part, sp, t.TempDir(), ka, Config{Subscribers: Subscribers{string(sp.Stream): {kb.PublisherID()}}})
	b := newMember(t, &partition{}, sp, t.TempDir(), kb, Config{KeyRequestTimeout: 10 * time.Second})
	b.x.mu.Lock()
	delete(b.x.topics, sp) // not joined yet
	b.x.mu.Unlock()
	m1 := content(t, a, sp, 1, `{"n":1}`, time.Now())
	got := make(chan error, 1)
	b.x.Await(context.Background(), m1, func(_ *streamr.StreamMessage, err error) { got <- err })
	waitFor(t, func() bool {
		return testutil.ToFloat64(b.x.metrics.decryptFailed.WithLabelValues("request_failed")) >= 1
	})
	part.mu.Lock()
	part.members = append(part.members, b.x)
	part.mu.Unlock()
	b.x.Attach(sp, part)
	if err := <-got; err != nil {
		t.Fatalf("B: %v, want the key after the request went out again", err)
	}
	part.wg.Wait()
}

// TestRequestHeardTwiceAnsweredOnce: a gateway that both subscribes to a
// partition and answers there gets each request twice; it answers once.
func TestRequestHeardTwiceAnsweredOnce(t *testing.T) {
	ka, kb := genKey(t), genKey(t)
	sp := ownedPart(ka, "secret")
	part := &partition{}
	a := newMember(t, part, sp, t.TempDir(), ka, Config{Subscribers: Subscribers{string(sp.Stream): {kb.PublisherID()}}})
	part.members = append(part.members, a.x) // joined twice
	b := newMember(t, part, sp, t.TempDir(), kb, Config{})
	if _, err := b.x.DecryptWait(context.Background(), content(t, a, sp, 1, `{}`, time.Now())); err != nil {
		t.Fatal(err)
	}
	part.wg.Wait()
	wantCount(t, "A's answered requests", a.x.metrics.requests, "answered", 1)
}

// ownedPart is partition 0 of the stream owner/name of owner's address.
func ownedPart(owner *streamr.EVMKey, name string) streamr.StreamPartID {
	addr := owner.Address()
	sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(addr[:])+"/"+name), 0)
	return sp
}
