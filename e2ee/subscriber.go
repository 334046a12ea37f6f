package e2ee

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/tributary-iot/tributary/streamr"
)

// ErrNoKey means a message's group key could not be obtained in time.
var ErrNoKey = errors.New("group key not obtained")

// subscriberState is the subscriber side: known keys, our key exchange
// key pair, and the requests in flight. Guarded by Exchange.mu.
type subscriberState struct {
	keys    map[string]streamr.GroupKey // by keyName
	kx      streamr.KeyExchangeKey      // made on first need
	pending map[string]*pendingKey      // by keyName
	byReq   map[string]string           // request ID → keyName
	waiting int                         // messages parked in pending
	limiter *rate.Limiter               // key requests we send
}

type pendingKey struct {
	publisher []byte
	requestID string
	waiters   []waiter
	timer     *time.Timer
	retry     *time.Timer   // sends the request again after a failure
	done      chan struct{} // closed when the key arrived or the wait ended
}

type waiter struct {
	msg  *streamr.StreamMessage
	then func(*streamr.StreamMessage, error)
}

func (s *subscriberState) init(perSec float64) {
	s.keys = make(map[string]streamr.GroupKey)
	s.pending = make(map[string]*pendingKey)
	s.byReq = make(map[string]string)
	s.limiter = rate.NewLimiter(rate.Limit(perSec), max(1, int(perSec)))
}

// Decrypt returns m with its content decrypted if the key is at hand
// (ok false: it is not; Await fetches it). A message announcing the next
// key (rotation) stores that key. Unencrypted messages come back as they
// are.
func (x *Exchange) Decrypt(ctx context.Context, m *streamr.StreamMessage) (out *streamr.StreamMessage, ok bool, err error) {
	c := m.Content()
	if c == nil || c.EncryptionType == streamr.EncryptionNone {
		return m, true, nil
	}
	if c.GroupKeyID == nil {
		return nil, false, errors.New("AES content without a group key ID")
	}
	x.mu.Lock()
	k, found, err := x.knownKey(m.ID.PublisherID, *c.GroupKeyID)
	x.mu.Unlock()
	if err != nil || !found {
		return nil, false, err
	}
	out, err = x.decryptWith(ctx, m, k)
	return out, err == nil, err
}

func (x *Exchange) decryptWith(ctx context.Context, m *streamr.StreamMessage, k streamr.GroupKey) (*streamr.StreamMessage, error) {
	plain, next, err := k.DecryptContent(m.Content())
	if err != nil {
		x.metrics.decryptFailed.WithLabelValues("decrypt").Inc()
		return nil, err
	}
	if next != nil {
		if err := x.storeKey(ctx, m.ID.PublisherID, *next); err != nil {
			return nil, err
		}
	}
	out := *m
	out.Body = plain
	x.metrics.decrypted.Inc()
	return &out, nil
}

// knownKey looks a key up in memory, then in storage. x.mu is held.
func (x *Exchange) knownKey(publisher []byte, id string) (streamr.GroupKey, bool, error) {
	name := keyName(publisher, id)
	if k, ok := x.sub.keys[name]; ok {
		return k, true, nil
	}
	k, ok, err := x.storedKey(publisher, id)
	if ok {
		x.sub.keys[name] = k
	}
	return k, ok, err
}

// storeKey keeps a publisher's key durably and wakes what waits for it.
func (x *Exchange) storeKey(ctx context.Context, publisher []byte, k streamr.GroupKey) error {
	name := keyName(publisher, k.ID)
	x.mu.Lock()
	_, known := x.sub.keys[name]
	x.mu.Unlock()
	if !known {
		if err := x.cfg.Secrets.PutSecret(ctx, name, k.Data); err != nil {
			return fmt.Errorf("store group key: %w", err)
		}
	}
	x.mu.Lock()
	x.sub.keys[name] = k
	p := x.sub.pending[name]
	if p != nil {
		x.endPending(name, p)
	}
	x.mu.Unlock()
	if p != nil {
		for _, w := range p.waiters {
			out, err := x.decryptWith(ctx, w.msg, k)
			w.then(out, err)
		}
	}
	return nil
}

// endPending forgets a pending key. x.mu is held.
func (x *Exchange) endPending(name string, p *pendingKey) {
	delete(x.sub.pending, name)
	delete(x.sub.byReq, p.requestID)
	x.sub.waiting -= len(p.waiters)
	p.timer.Stop()
	if p.retry != nil {
		p.retry.Stop()
	}
	close(p.done)
}

// Await decrypts m once its key arrives by key exchange, then calls then
// with the plaintext message, or with an error wrapping ErrNoKey after
// KeyRequestTimeout. then runs on another goroutine.
func (x *Exchange) Await(ctx context.Context, m *streamr.StreamMessage, then func(*streamr.StreamMessage, error)) {
	out, ok, err := x.Decrypt(ctx, m)
	if err != nil || ok {
		then(out, err)
		return
	}
	if _, err := x.park(ctx, m, then); err != nil {
		then(nil, err)
	}
}

// DecryptWait is Decrypt that waits up to KeyRequestTimeout for a missing
// key, for callers that may block (history and gap fills).
func (x *Exchange) DecryptWait(ctx context.Context, m *streamr.StreamMessage) (*streamr.StreamMessage, error) {
	out, ok, err := x.Decrypt(ctx, m)
	if err != nil || ok {
		return out, err
	}
	type result struct {
		m   *streamr.StreamMessage
		err error
	}
	got := make(chan result, 1)
	if _, err := x.park(ctx, m, func(m *streamr.StreamMessage, err error) { got <- result{m, err} }); err != nil {
		return nil, err
	}
	select {
	case r := <-got:
		return r.m, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// park queues m until its key arrives, sending a request if none is in
// flight for the key.
func (x *Exchange) park(ctx context.Context, m *streamr.StreamMessage, then func(*streamr.StreamMessage, error)) (*pendingKey, error) {
	id := *m.Content().GroupKeyID
	name := keyName(m.ID.PublisherID, id)
	x.mu.Lock()
	if k, ok := x.sub.keys[name]; ok { // arrived meanwhile
		x.mu.Unlock()
		out, err := x.decryptWith(ctx, m, k)
		then(out, err)
		return nil, nil
	}
	if x.sub.waiting >= x.cfg.MaxWaiting {
		x.mu.Unlock()
		x.metrics.decryptFailed.WithLabelValues("waiting_full").Inc()
		x.warn("waiting_full", "message dropped: too many messages wait for group keys", "max_waiting", x.cfg.MaxWaiting)
		return nil, fmt.Errorf("%w: %d messages already wait for keys", ErrNoKey, x.cfg.MaxWaiting)
	}
	p, inFlight := x.sub.pending[name]
	if !inFlight {
		p = &pendingKey{publisher: m.ID.PublisherID, requestID: streamr.NewUUID(), done: make(chan struct{})}
		p.timer = time.AfterFunc(x.cfg.KeyRequestTimeout, func() { x.expire(name, p) })
		x.sub.pending[name] = p
		x.sub.byReq[p.requestID] = name
	}
	p.waiters = append(p.waiters, waiter{m, then})
	x.sub.waiting++
	x.mu.Unlock()
	if !inFlight {
		x.sendRequest(ctx, m.ID.StreamPart(), p, id)
	}
	return p, nil
}

// requestRetry is how soon a key request that could not be sent (no
// overlay neighbour yet, say, right after joining) is sent again while
// its messages wait.
const requestRetry = 500 * time.Millisecond

// sendRequest sends the request of p, and again every requestRetry while
// it fails and p still waits.
func (x *Exchange) sendRequest(ctx context.Context, part streamr.StreamPartID, p *pendingKey, id string) {
	err := x.request(ctx, part, p, id)
	if err == nil {
		return
	}
	x.metrics.decryptFailed.WithLabelValues("request_failed").Inc()
	x.warn("request_failed", "group key request not sent: sent again while its messages wait", "publisher", streamr.UserID(p.publisher), "err", err)
	if ctx.Err() != nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	select {
	case <-p.done:
	default:
		p.retry = time.AfterFunc(requestRetry, func() { x.sendRequest(ctx, part, p, id) })
	}
}

// expire ends a wait that timed out: its messages are reported, not
// delivered.
func (x *Exchange) expire(name string, p *pendingKey) {
	x.mu.Lock()
	if x.sub.pending[name] != p {
		x.mu.Unlock()
		return
	}
	x.endPending(name, p)
	x.mu.Unlock()
	x.metrics.decryptFailed.WithLabelValues("key_timeout").Add(float64(len(p.waiters)))
	x.warn("key_timeout", "messages not delivered: their group key did not arrive", "publisher", streamr.UserID(p.publisher),
		"messages", len(p.waiters), "timeout", x.cfg.KeyRequestTimeout.String())
	err := fmt.Errorf("%w from %s within %s", ErrNoKey, streamr.UserID(p.publisher), x.cfg.KeyRequestTimeout)
	for _, w := range p.waiters {
		w.then(nil, err)
	}
}

// request sends a GroupKeyRequest for one key to its publisher.
func (x *Exchange) request(ctx context.Context, part streamr.StreamPartID, p *pendingKey, id string) error {
	if !x.sub.limiter.Allow() {
		x.metrics.requestsSent.WithLabelValues("rate_limited").Inc()
		return errors.New("over the key request rate limit")
	}
	kx, err := x.exchangeKey(ctx)
	if err != nil {
		return err
	}
	req := &streamr.GroupKeyRequest{
		RequestID:      p.requestID,
		RecipientID:    p.publisher,
		PublicKey:      kx.PublicKey(),
		GroupKeyIDs:    []string{id},
		EncryptionType: kx.Type(),
	}
	if err := x.publish(ctx, part, req); err != nil {
		x.metrics.requestsSent.WithLabelValues("failed").Inc()
		return err
	}
	x.metrics.requestsSent.WithLabelValues("sent").Inc()
	return nil
}

// exchangeKey returns our key exchange key pair, made and stored on first
// use. Making it takes seconds on a Pi (a 4096-bit RSA key), so it runs under
// kxMu only: x.mu stays free for decrypting and answering meanwhile.
func (x *Exchange) exchangeKey(ctx context.Context) (streamr.KeyExchangeKey, error) {
	if kx := x.currentExchangeKey(); kx != nil {
		return kx, nil
	}
	x.kxMu.Lock()
	defer x.kxMu.Unlock()
	if kx := x.currentExchangeKey(); kx != nil {
		return kx, nil // made while we waited
	}
	name := "kx/" + x.cfg.KeyType.String()
	stored, ok, err := x.cfg.Secrets.Secret(name)
	if err != nil {
		return nil, err
	}
	var kx streamr.KeyExchangeKey
	switch {
	case ok && x.cfg.KeyType == streamr.AsymmetricRSA:
		kx, err = streamr.ParseRSAKey(stored)
	case ok:
		kx, err = streamr.ParseMLKEMKey(stored)
	case x.cfg.KeyType == streamr.AsymmetricRSA:
		kx, err = streamr.GenerateRSAKey(x.cfg.RSABits)
	default:
		kx, err = streamr.GenerateMLKEMKey()
	}
	if err != nil {
		return nil, fmt.Errorf("key exchange key: %w", err)
	}
	if !ok {
		if err := x.cfg.Secrets.PutSecret(ctx, name, kx.Private()); err != nil {
			return nil, err
		}
	}
	x.mu.Lock()
	x.sub.kx = kx
	x.mu.Unlock()
	return kx, nil
}

func (x *Exchange) currentExchangeKey() streamr.KeyExchangeKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.sub.kx
}

// receive stores the keys of a GroupKeyResponse to one of our requests.
func (x *Exchange) receive(ctx context.Context, m *streamr.StreamMessage, resp *streamr.GroupKeyResponse) {
	if !bytes.Equal(resp.RecipientID, x.self) {
		return
	}
	x.mu.Lock()
	name, ours := x.sub.byReq[resp.RequestID]
	p := x.sub.pending[name]
	kx := x.sub.kx
	x.mu.Unlock()
	if !ours || p == nil || kx == nil {
		return // not ours, or answered already
	}
	if !bytes.Equal(m.ID.PublisherID, p.publisher) {
		// A key server answers for the publisher: it must be allowed to
		// publish on the stream, as the SDK checks a group key message's
		// signer.
		if ok, err := x.keyServerAllowed(ctx, m); !ok {
			x.metrics.decryptFailed.WithLabelValues("unauthorised_key_server").Inc()
			x.warn("unauthorised_key_server", "key response refused: its signer is not the publisher asked and may not publish on the stream",
				"from", m.ID.PublisherHex(), "publisher", streamr.UserID(p.publisher), "stream", string(m.ID.StreamID), "err", err)
			return
		}
	}
	if resp.EncryptionType != kx.Type() {
		x.metrics.decryptFailed.WithLabelValues("bad_response").Inc()
		return
	}
	for _, ek := range resp.GroupKeys {
		if keyName(p.publisher, ek.ID) != name {
			continue // only the key asked for: a key server plants no others
		}
		data, err := kx.Decrypt(ek.Data)
		if err == nil && len(data) != streamr.GroupKeyLen {
			err = fmt.Errorf("%d bytes", len(data))
		}
		if err != nil {
			x.metrics.decryptFailed.WithLabelValues("bad_response").Inc()
			x.warn("bad_response", "group key in a key response does not decrypt", "from", m.ID.PublisherHex(), "err", err)
			continue
		}
		if err := x.storeKey(ctx, p.publisher, streamr.GroupKey{ID: ek.ID, Data: data}); err != nil {
			x.warn("store_failed", "received group key not stored", "err", err)
		}
	}
}

// ErrClosed is what messages still waiting for keys get at Close.
var ErrClosed = errors.New("e2ee: closed")

// Close ends every wait for a key: the waiting messages' callbacks run
// with ErrClosed, and no timer is left behind. Decrypt keeps working.
func (x *Exchange) Close() {
	x.mu.Lock()
	var ended []*pendingKey
	for name, p := range x.sub.pending {
		x.endPending(name, p)
		ended = append(ended, p)
	}
	x.mu.Unlock()
	for _, p := range ended {
		for _, w := range p.waiters {
			w.then(nil, ErrClosed)
		}
	}
}
