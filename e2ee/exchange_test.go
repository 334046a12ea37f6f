package e2ee

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// partition delivers every published message to every member, decoded
// and validated as the overlay does, on its own goroutine per message.
type partition struct {
	mu      sync.Mutex
	members []*Exchange
	wg      sync.WaitGroup
}

func (p *partition) Publish(_ context.Context, encoded [][]byte) (int, error) {
	for _, b := range encoded {
		m, err := streamr.Unmarshal(b)
		if err != nil {
			return 0, err
		}
		if err := streamr.Validate(m, len(b), streamr.Limits{}); err != nil {
			return 0, err
		}
		p.mu.Lock()
		members := append([]*Exchange(nil), p.members...)
		p.mu.Unlock()
		for _, x := range members {
			p.wg.Go(func() { x.HandleMessage(context.Background(), m) })
		}
	}
	return len(encoded), nil
}

type member struct {
	x   *Exchange
	key *streamr.EVMKey
	reg *prometheus.Registry
	db  *storage.Store
}

func newMember(t *testing.T, part *partition, sp streamr.StreamPartID, dir string, key *streamr.EVMKey, cfg Config) *member {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := prometheus.NewRegistry()
	cfg.Signer, cfg.Secrets, cfg.Registerer, cfg.RSABits = key, db, reg, 2048
	x, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	x.Attach(sp, part)
	part.mu.Lock()
	part.members = append(part.members, x)
	part.mu.Unlock()
	return &member{x: x, key: key, reg: reg, db: db}
}

func genKey(t *testing.T) *streamr.EVMKey {
	k, err := streamr.GenerateEVMKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// content signs an encrypted reading of a's, as the pipeline makes it.
func content(t *testing.T, a *member, sp streamr.StreamPartID, ts int64, text string, now time.Time) *streamr.StreamMessage {
	t.Helper()
	c := &streamr.ContentMessage{Content: []byte(text)}
	if _, err := a.x.Encrypt(context.Background(), sp, c, now); err != nil {
		t.Fatal(err)
	}
	m := &streamr.StreamMessage{ID: streamr.MessageID{StreamID: sp.Stream, StreamPartition: int32(sp.Partition), Timestamp: ts, MsgChainID: "chain"}, Body: c}
	if err := streamr.SignMessage(context.Background(), a.key, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestKeyExchangeAllowedAndRefused(t *testing.T) {
	for _, kt := range []streamr.AsymmetricEncryptionType{streamr.AsymmetricRSA, streamr.AsymmetricMLKEM} {
		t.Run(kt.String(), func(t *testing.T) {
			ka, kb, kc := genKey(t), genKey(t), genKey(t)
			aAddr := ka.Address()
			sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(aAddr[:])+"/secret"), 0)
			part := &partition{}
			subs := Subscribers{string(sp.Stream): {kb.PublisherID()}}
			a := newMember(t, part, sp, t.TempDir(), ka, Config{Subscribers: subs, RotateEvery: time.Hour})
			b := newMember(t, part, sp, t.TempDir(), kb, Config{KeyType: kt})
			c := newMember(t, part, sp, t.TempDir(), kc, Config{KeyType: kt, KeyRequestTimeout: 500 * time.Millisecond})

			now := time.Now()
			m1 := content(t, a, sp, 1, `{"n":1}`, now)
			got, err := b.x.DecryptWait(context.Background(), m1)
			if err != nil || string(got.Content().Content) != `{"n":1}` {
				t.Fatalf("B: %v, %v", got, err)
			}
			if _, err := c.x.DecryptWait(context.Background(), m1); !errors.Is(err, ErrNoKey) {
				t.Fatalf("C decrypted or failed otherwise: %v", err)
			}
			part.wg.Wait()
			if n := testutil.ToFloat64(a.x.metrics.requests.WithLabelValues("refused")); n != 1 {
				t.Fatalf("A counted %v refused requests, want 1 (C's)", n)
			}
			if n := testutil.ToFloat64(a.x.metrics.requests.WithLabelValues("answered")); n != 1 {
				t.Fatalf("A answered %v requests, want 1 (B's)", n)
			}

			// Rotation in band: B follows without another request.
			m2 := content(t, a, sp, 2, `{"n":2}`, now.Add(2*time.Hour))
			m3 := content(t, a, sp, 3, `{"n":3}`, now.Add(2*time.Hour))
			for _, m := range []*streamr.StreamMessage{m2, m3} {
				got, ok, err := b.x.Decrypt(context.Background(), m)
				if err != nil || !ok {
					t.Fatalf("B after rotation: ok %v, %v", ok, err)
				}
				_ = got
			}
			if *m2.Content().GroupKeyID == *m3.Content().GroupKeyID || m2.Content().NewGroupKey == nil {
				t.Fatal("no rotation announced")
			}
			// Re-key: B fetches the new key by key exchange.
			if _, err := a.x.Rekey(context.Background(), sp.Stream); err != nil {
				t.Fatal(err)
			}
			m4 := content(t, a, sp, 4, `{"n":4}`, now.Add(2*time.Hour))
			if _, ok, _ := b.x.Decrypt(context.Background(), m4); ok {
				t.Fatal("re-keyed message decrypted without key exchange")
			}
			if got, err := b.x.DecryptWait(context.Background(), m4); err != nil || string(got.Content().Content) != `{"n":4}` {
				t.Fatalf("B after re-key: %v", err)
			}
			part.wg.Wait()
		})
	}
}

// TestPublisherKeysSurviveRestart: a publisher reopened on the same store
// keeps encrypting with its stored key and answers for keys of before.
func TestPublisherKeysSurviveRestart(t *testing.T) {
	ka, kb := genKey(t), genKey(t)
	aAddr := ka.Address()
	sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(aAddr[:])+"/secret"), 0)
	dir := t.TempDir()
	subs := Subscribers{string(sp.Stream): {kb.PublisherID()}}
	part := &partition{}
	a := newMember(t, part, sp, dir, ka, Config{Subscribers: subs})
	m1 := content(t, a, sp, 1, `{"n":1}`, time.Now())
	part.members = nil
	a.db.Close()

	a2 := newMember(t, part, sp, dir, ka, Config{Subscribers: subs})
	m2 := content(t, a2, sp, 2, `{"n":2}`, time.Now())
	if *m1.Content().GroupKeyID != *m2.Content().GroupKeyID {
		t.Fatal("the restarted publisher made a new key")
	}
	b := newMember(t, part, sp, t.TempDir(), kb, Config{})
	if got, err := b.x.DecryptWait(context.Background(), m1); err != nil || string(got.Content().Content) != `{"n":1}` {
		t.Fatalf("B: %v", err)
	}
	part.wg.Wait()
}

// TestCloseEndsWaits: a message waiting for a key that never comes is
// given up at Close, not left to a timer.
func TestCloseEndsWaits(t *testing.T) {
	ka, kb := genKey(t), genKey(t)
	aAddr := ka.Address()
	sp, _ := streamr.NewStreamPartID(streamr.StreamID(streamr.UserID(aAddr[:])+"/secret"), 0)
	part := &partition{}
	a := newMember(t, part, sp, t.TempDir(), ka, Config{}) // answers no one
	b := newMember(t, part, sp, t.TempDir(), kb, Config{KeyType: streamr.AsymmetricMLKEM, KeyRequestTimeout: time.Hour})
	got := make(chan error, 1)
	b.x.Await(context.Background(), content(t, a, sp, 1, `{}`, time.Now()), func(_ *streamr.StreamMessage, err error) { got <- err })
	b.x.Close()
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("wait ended with %v, want ErrClosed", err)
	}
	part.wg.Wait()
}

// gatedSecrets holds the first read of the key exchange key until released, standing in for
// the seconds a 4096-bit RSA key takes to make on a Pi.
type gatedSecrets struct {
	memSecrets
	entered, release chan struct{}
	once             sync.Once
}

func (s *gatedSecrets) Secret(name string) ([]byte, bool, error) {
	if len(name) > 3 && name[:3] == "kx/" {
		s.once.Do(func() { close(s.entered); <-s.release })
	}
	return s.memSecrets.Secret(name)
}

// Making the key exchange key leaves the exchange's state free: decrypting with known keys and
// answering requests go on meanwhile. It used to hold the lock for the whole key generation.
func TestExchangeKeyMadeWithoutTheLock(t *testing.T) {
	secrets := &gatedSecrets{memSecrets: memSecrets{m: map[string][]byte{}},
		entered: make(chan struct{}), release: make(chan struct{})}
	x, err := New(Config{Signer: genKey(t), Secrets: secrets, KeyType: streamr.AsymmetricMLKEM})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	made := make(chan error, 2)
	for range 2 { // the second waits for the first and gets the same key
		go func() { _, err := x.exchangeKey(context.Background()); made <- err }()
	}
	<-secrets.entered
	// The second caller takes the lock for an instant to find the key in the making: poll, as a
	// lock held across the key generation is never free.
	free := false
	for deadline := time.Now().Add(time.Second); !free && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if free = x.mu.TryLock(); free {
			x.mu.Unlock()
		}
	}
	close(secrets.release)
	if !free {
		t.Error("the exchange's lock is held while the key exchange key is made")
	}
	for range 2 {
		if err := <-made; err != nil {
			t.Fatal(err)
		}
	}
	if len(secrets.m) != 1 {
		t.Errorf("stored %d key exchange keys, want 1", len(secrets.m))
	}
}
