package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"regexp"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/e2ee"
	"github.com/tributary-iot/tributary/overlay"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// EncryptionConfig is the [encryption] table (issue 18).
type EncryptionConfig struct {
	RotateEvery             Duration `toml:"rotate_every"`                // in-band key rotation period; "0s": never
	KeyExchange             string   `toml:"key_exchange"`                // our key requests' cipher: "rsa" or "ml-kem"
	RSAKeyBits              int      `toml:"rsa_key_bits"`                // modulus of our RSA key exchange key
	KeyRequestTimeout       Duration `toml:"key_request_timeout"`         // how long a message waits for its key
	MaxKeyRequestsPerSecond float64  `toml:"max_key_requests_per_second"` // requests we send
	MaxAnswersPerSecond     float64  `toml:"max_answers_per_second"`      // requests we answer, per requester
	MaxKeysPerRequest       int      `toml:"max_keys_per_request"`        // group key IDs answered per request
	MaxWaiting              int      `toml:"max_waiting"`                 // messages waiting for keys
}

func defaultEncryption() EncryptionConfig {
	return EncryptionConfig{
		KeyExchange: "rsa", RSAKeyBits: streamr.DefaultRSAKeyBits, KeyRequestTimeout: Duration(30 * time.Second),
		MaxKeyRequestsPerSecond: 20, MaxAnswersPerSecond: 20, MaxKeysPerRequest: 100, MaxWaiting: 10000,
	}
}

func (e EncryptionConfig) validate() error {
	var errs []error
	if e.KeyExchange != "rsa" && e.KeyExchange != "ml-kem" {
		errs = append(errs, fmt.Errorf("encryption.key_exchange %q: want \"rsa\" or \"ml-kem\"", e.KeyExchange))
	}
	if e.RSAKeyBits < 2048 || e.RSAKeyBits > 8192 {
		errs = append(errs, fmt.Errorf("encryption.rsa_key_bits %d: want 2048 to 8192", e.RSAKeyBits))
	}
	if e.RotateEvery < 0 || e.KeyRequestTimeout <= 0 {
		errs = append(errs, errors.New("encryption.rotate_every must not be negative, encryption.key_request_timeout must be positive"))
	}
	if e.MaxKeyRequestsPerSecond <= 0 || e.MaxAnswersPerSecond <= 0 || e.MaxKeysPerRequest <= 0 || e.MaxWaiting <= 0 {
		errs = append(errs, errors.New("encryption.max_key_requests_per_second, max_answers_per_second, max_keys_per_request and max_waiting: must be positive"))
	}
	return errors.Join(errs...)
}

// ruleSubscribers is the static subscribe permission of the rules'
// subscribers lists: a user may subscribe to a stream that a rule listing
// it can produce.
type ruleSubscribers []ruleSubscriberList

type ruleSubscriberList struct {
	streams *regexp.Regexp
	users   e2ee.Subscribers // under the key "" only
}

// Allowed implements e2ee.Permissions.
func (r ruleSubscribers) Allowed(ctx context.Context, streamID string, user []byte, p streamr.Permission, at time.Time) (bool, error) {
	for _, l := range r {
		if !l.streams.MatchString(streamID) {
			continue
		}
		if ok, err := l.users.Allowed(ctx, "", user, p, at); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

func newRuleSubscribers(rules []*bridge.Rule, address string) (ruleSubscribers, error) {
	var out ruleSubscribers
	for i, r := range rules {
		var users [][]byte
		for _, s := range r.Subscribers() {
			u, err := e2ee.ParseUserID(s)
			if err != nil {
				return nil, fmt.Errorf("rule %d: subscribers: %w", i+1, err)
			}
			users = append(users, u)
		}
		if len(users) > 0 {
			out = append(out, ruleSubscriberList{streams: r.StreamPattern(address), users: e2ee.Subscribers{"": users}})
		}
	}
	return out, nil
}

// needsE2EE reports whether the gateway encrypts or may receive encrypted
// streams: a rule that can encrypt, a subscription, or a key server.
func (c *Config) needsE2EE() bool {
	if len(c.Subscribe) > 0 {
		return true
	}
	for _, st := range c.Store {
		if st.AnswerKeyRequests {
			return true
		}
	}
	for _, r := range c.Rules {
		if r.Encryption == "always" {
			return true
		}
	}
	return false
}

// listedOrChain lets a user have group keys if a rule lists it or, with
// [registry], if the StreamRegistry gives it Subscribe on the stream.
type listedOrChain struct{ listed, chain e2ee.Permissions }

// Allowed implements e2ee.Permissions.
func (p listedOrChain) Allowed(ctx context.Context, streamID string, user []byte, perm streamr.Permission, at time.Time) (bool, error) {
	if ok, err := p.listed.Allowed(ctx, streamID, user, perm, at); ok && err == nil {
		return true, nil
	}
	return p.chain.Allowed(ctx, streamID, user, perm, at)
}

// keyServing returns the stream partitions of the [[store]] tables with
// answer_key_requests and the users their subscribers lists allow.
func (c *Config) keyServing() ([]streamr.StreamPartID, e2ee.Subscribers, error) {
	var parts []streamr.StreamPartID
	users := e2ee.Subscribers{}
	for i, st := range c.Store {
		n := i + 1
		switch {
		case !st.AnswerKeyRequests && len(st.Subscribers) > 0:
			return nil, nil, fmt.Errorf("store %d: subscribers is only used with answer_key_requests = true", n)
		case !st.AnswerKeyRequests:
			continue
		case len(st.Subscribers) == 0 && !c.Registry.Enabled():
			return nil, nil, fmt.Errorf("store %d: answer_key_requests without subscribers and without [registry] would give keys to no one", n)
		}
		p, err := st.parts(n)
		if err != nil {
			return nil, nil, err
		}
		parts = append(parts, p...)
		stream := string(p[0].Stream)
		for _, sub := range st.Subscribers {
			u, err := e2ee.ParseUserID(sub)
			if err != nil {
				return nil, nil, fmt.Errorf("store %d: subscribers: %w", n, err)
			}
			users[stream] = append(users[stream], u)
		}
	}
	return parts, users, nil
}

// publishPolicy is the overlay's publisher policy (allow list, or the
// StreamRegistry's Publish) as the key exchange asks it of a key server.
type publishPolicy struct{ p overlay.Policy }

// MayPublishAt implements e2ee.PublishPolicy.
func (p publishPolicy) MayPublishAt(ctx context.Context, stream streamr.StreamID, user []byte, at time.Time) (bool, error) {
	if t, ok := p.p.(overlay.TimedPolicy); ok {
		return t.MayPublishAt(ctx, stream, user, at)
	}
	return p.p.MayPublish(stream, user), nil
}

// keyServers is who may answer this gateway's key requests besides the
// publisher: whoever the overlay's validator lets publish on the stream.
func (s *system) keyServers() (e2ee.PublishPolicy, error) {
	if s.registry != nil {
		return publishPolicy{registryPolicy{s.registry}}, nil
	}
	ocfg, err := s.cfg.overlayConfig(nil, nil)
	if err != nil {
		return nil, err
	}
	return publishPolicy{ocfg.Policy}, nil
}

// startE2EE builds the key exchange of the gateway identity.
func (s *system) startE2EE(rules []*bridge.Rule) error {
	if !s.cfg.needsE2EE() {
		return nil
	}
	subs, err := newRuleSubscribers(rules, streamr.UserID(s.key.PublisherID()))
	if err != nil {
		return err
	}
	var perms e2ee.Permissions = subs
	if s.registry != nil {
		perms = listedOrChain{subs, s.registry}
	}
	served, storeSubs, err := s.cfg.keyServing()
	if err != nil {
		return err
	}
	var requesters e2ee.Permissions = storeSubs
	if s.registry != nil {
		requesters = listedOrChain{storeSubs, s.registry}
	}
	keyServers, err := s.keyServers()
	if err != nil {
		return err
	}
	e := s.cfg.Encryption
	kt := streamr.AsymmetricRSA
	if e.KeyExchange == "ml-kem" {
		kt = streamr.AsymmetricMLKEM
	}
	s.e2ee, err = e2ee.New(e2ee.Config{
		Signer: s.key, Secrets: s.secrets, Subscribers: perms, RotateEvery: time.Duration(e.RotateEvery),
		ServeParts: served, KeyRequesters: requesters, KeyServers: keyServers,
		KeyType: kt, RSABits: e.RSAKeyBits, KeyRequestTimeout: time.Duration(e.KeyRequestTimeout),
		MaxRequestsPerSec: e.MaxKeyRequestsPerSecond, MaxAnswersPerSec: e.MaxAnswersPerSecond,
		MaxKeysPerRequest: e.MaxKeysPerRequest, MaxWaiting: e.MaxWaiting,
		Registerer: s.reg, Logger: s.log,
	})
	if err != nil {
		return err
	}
	s.encryptedParts = make(chan streamr.StreamPartID, 64)
	s.keyServed = served
	s.collect, s.keyServerDone = make(chan *streamr.StreamMessage, 256), make(chan struct{})
	s.keyTopics = newKeyTopics(s.e2ee)
	s.keyTopics.sn = s.snKeys
	return nil
}

// keyCollecting wraps the storer's log so that a key server sees each
// message of a partition it serves once committed, in chain order (a
// rotation is announced before the key is used), live or filled by resend.
func (s *system) keyCollecting(l bridge.ReceivedLog) bridge.ReceivedLog {
	if len(s.keyServed) == 0 {
		return l
	}
	served := make(map[streamr.StreamPartID]bool, len(s.keyServed))
	for _, p := range s.keyServed {
		served[p] = true
	}
	return collectingLog{ReceivedLog: l, served: served, out: s.collect, done: s.keyServerDone}
}

// collectingLog passes the encrypted messages it stores to runKeyResponder.
type collectingLog struct {
	bridge.ReceivedLog
	served map[streamr.StreamPartID]bool
	out    chan<- *streamr.StreamMessage
	done   <-chan struct{}
}

func (l collectingLog) StoreReceived(ctx context.Context, msgs []streamr.Envelope, chains map[string]streamr.ChainState) (int, error) {
	n, err := l.ReceivedLog.StoreReceived(ctx, msgs, chains)
	if err != nil {
		return n, err // the batch comes again
	}
	for _, e := range msgs {
		c := e.Msg.Content()
		if c == nil || c.EncryptionType == streamr.EncryptionNone || !l.served[e.Msg.ID.StreamPart()] {
			continue
		}
		select { // waits for the key server, as the storer may
		case l.out <- e.Msg:
		case <-l.done:
			return n, nil
		}
	}
	return n, nil
}

// encryptedPartsPrefix names the stream partitions this gateway has
// encrypted for: it listens there for key requests, after a restart too
// (a backlog signed before it is forwarded after it).
const encryptedPartsPrefix = "parts/"

// noteEncryptedPart hears of a partition from the signer (which must not
// block on the overlay).
func (s *system) noteEncryptedPart(part streamr.StreamPartID) {
	select {
	case s.encryptedParts <- part:
	default:
		s.log.Warn("key responder busy: partition joined at the next encrypted message", "stream_part", part.String())
	}
}

// runKeyResponder joins every partition this gateway encrypts for or
// serves keys of, to answer key requests there (on the overlay, and on
// the Streamr Network when it publishes there), and collects the keys of
// what the storer keeps there, until ctx is done.
func (s *system) runKeyResponder(ctx context.Context) error {
	defer close(s.keyServerDone)
	joined := make(map[streamr.StreamPartID]bool)
	join := func(part streamr.StreamPartID) {
		if joined[part] || !s.joinForKeyRequests(ctx, part) {
			return
		}
		joined[part] = true
		if err := s.store.PutSecret(ctx, encryptedPartsPrefix+part.String(), nil); err != nil {
			s.log.Warn("remember encrypted partition", "stream_part", part.String(), "err", err)
		}
	}
	err := s.store.ScanSecrets(encryptedPartsPrefix, func(name string, _ []byte) error {
		part, err := streamr.ParseStreamPartID(strings.TrimPrefix(name, encryptedPartsPrefix))
		if err == nil {
			join(part)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("encrypted partitions: %w", err)
	}
	for _, part := range s.keyServed {
		join(part) // before the first key is requested there
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case part := <-s.encryptedParts:
			join(part)
		case m := <-s.collect:
			s.e2ee.Collect(ctx, m)
		}
	}
}

// joinForKeyRequests joins part on the networks the gateway publishes
// to, handing the key exchange messages there to e2ee. It reports
// whether one network was joined.
func (s *system) joinForKeyRequests(ctx context.Context, part streamr.StreamPartID) bool {
	handle := func(m *streamr.StreamMessage, _ []byte) { s.e2ee.HandleMessage(ctx, m) }
	ok := false
	if s.adapter != nil {
		t, err := s.adapter.Join(part, handle)
		if err != nil {
			s.log.Warn("join partition for key requests", "stream_part", part.String(), "err", err)
		} else {
			s.keyTopics.attach(part, t)
			ok = true
		}
	}
	if s.snForwarder != nil { // streamr_network.publish: readers there ask through the proxies
		s.keyTopics.attach(part, s.snAdapter.joinKeyRequests(part, handle))
		ok = true
	}
	return ok
}

// rekey replaces a stream's group key on the running gateway.
func (s *system) rekey(ctx context.Context, stream string) (string, error) {
	id, err := streamr.ParseStreamID(stream)
	if err != nil {
		return "", err
	}
	keyID, err := s.e2ee.Rekey(ctx, id)
	if err == nil {
		s.log.Info("stream re-keyed", "stream", stream, "group_key_id", keyID)
	}
	return keyID, err
}

// Rekey asks the gateway of cfg, running, to replace a stream's group key
// at once (`bridge stream rekey`): subscribers fetch the new one by key
// exchange, so one no longer allowed cannot read what follows. It returns
// the new key's ID.
func Rekey(ctx context.Context, cfg *Config, stream string) (string, error) {
	if _, err := streamr.ParseStreamID(stream); err != nil {
		return "", err
	}
	if cfg.HTTP.Address == "" {
		return "", errors.New("rekey: http.address is empty: the running gateway is asked over its HTTP API")
	}
	url := "http://" + cfg.HTTP.Address + "/streams/" + neturl.PathEscape(stream) + "/rekey"
	req, err := newAPIRequest(ctx, cfg, http.MethodPost, url) // with an API key when [api] has them
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("rekey: is the gateway running? %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		GroupKeyID string `json:"groupKeyId"`
		Error      string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil {
		return "", fmt.Errorf("rekey: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("rekey %s: %s: %s", stream, resp.Status, body.Error)
	}
	return body.GroupKeyID, nil
}

// writeDecrypted writes the stored messages of q with their content
// decrypted where this gateway holds the key; the others are written as
// they are, and counted on stderr.
func writeDecrypted(store *storage.Store, secrets e2ee.Secrets, q streamr.ResendQuery, out *streamr.RawWriter, stderr io.Writer) error {
	keys := e2ee.NewKeyring(secrets)
	missing := 0
	var firstErr error
	err := store.Messages(q.Part, q.From.Timestamp, q.UpperBound().Timestamp, func(encoded []byte) error {
		m, err := streamr.Unmarshal(encoded)
		if err != nil {
			return err
		}
		plain, err := keys.Decrypt(m)
		if err != nil {
			missing++
			firstErr = cmp.Or(firstErr, err)
			return out.WriteFrame(encoded)
		}
		return out.Write(plain)
	})
	if missing > 0 {
		fmt.Fprintf(stderr, "bridge export --decrypt: %d messages left encrypted (%v)\n", missing, firstErr)
	}
	return err
}
