package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/streamr"
)

// SubscribeConfig maps stream partitions onto a local MQTT topic.
type SubscribeConfig struct {
	Stream     string // stream ID
	Partitions []int  // default: partition 0
	Topic      string // MQTT topic template: {stream}, {partition}, {publisher}; default "{stream}"
	Metadata   bool   // wrap content as {"content":…,"metadata":{…}} like the Streamr node's payloadMetadata
}

// LocalBroker publishes to the gateway's own MQTT subscribers and holds the copies it queues
// for persistent sessions durably.
type LocalBroker interface {
	// PublishMarked publishes and stores mark under key atomically with the message's queued
	// copies: after a crash both are kept or neither.
	PublishMarked(topic string, payload []byte, qos byte, key string, mark []byte) error
	// Mark returns the last mark stored under key.
	Mark(key string) ([]byte, bool, error)
	// Sync returns once everything published so far is held durably.
	Sync(ctx context.Context) error
}

// DeliveryPositions returns the PositionStore of the Orderer that feeds a Deliverer: a chain's
// position is the later of the one saved in positions and the mark the broker stored with the
// last message delivered, and positions are saved only once the broker holds every message
// delivered before them. So after a crash the Orderer resumes exactly after the last message
// the broker kept: none is queued twice for a persistent session, none is skipped.
func DeliveryPositions(positions PositionStore, broker LocalBroker) PositionStore {
	return deliveryPositions{positions, broker}
}

type deliveryPositions struct {
	store  PositionStore
	broker LocalBroker
}

func (p deliveryPositions) ChainState(key string) (streamr.ChainState, bool, error) {
	st, ok, err := p.store.ChainState(key)
	if err != nil {
		return st, ok, err
	}
	b, found, err := p.broker.Mark(key)
	if err != nil || !found {
		return st, ok, err
	}
	var last streamr.MessageRef
	if err := json.Unmarshal(b, &last); err != nil {
		return st, ok, fmt.Errorf("delivery mark %q: %w", key, err)
	}
	if !ok || st.Last == nil || st.Last.Compare(last) < 0 {
		st.Last = &last
	}
	return st, true, nil
}

// appendMark appends ref as the JSON object deliveryPositions reads back
// ({"Timestamp":…,"SequenceNumber":…}, encoding/json's form of a
// MessageRef), without encoding/json's reflection: one mark per delivered
// message.
func appendMark(b []byte, ref streamr.MessageRef) []byte {
	b = append(b, `{"Timestamp":`...)
	b = strconv.AppendInt(b, ref.Timestamp, 10)
	b = append(b, `,"SequenceNumber":`...)
	b = strconv.AppendInt(b, int64(ref.SequenceNumber), 10)
	return append(b, '}')
}

func (p deliveryPositions) SaveChainStates(ctx context.Context, states map[string]streamr.ChainState) error {
	if err := p.broker.Sync(ctx); err != nil {
		return fmt.Errorf("wait for local MQTT to hold delivered messages: %w", err)
	}
	return p.store.SaveChainStates(ctx, states)
}

// Subscription is a compiled SubscribeConfig.
type Subscription struct {
	parts    []streamr.StreamPartID
	topic    string
	pieces   []topicPiece // topic, parsed once: it is filled in for every message
	metadata bool
	// hasPublisher: the topic has {publisher}.
	hasPublisher bool
}

// topicPiece is literal text, or a placeholder of a [[subscribe]] topic.
type topicPiece struct {
	text        string
	placeholder string // "stream", "partition" or "publisher"; "": text
}

// CompileSubscription checks a [[subscribe]] table; index (0-based) names
// it in errors.
func CompileSubscription(c SubscribeConfig, index int) (*Subscription, error) {
	where := fmt.Sprintf("subscribe %d (stream %q)", index+1, c.Stream)
	id, err := streamr.ParseStreamID(c.Stream)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	s := &Subscription{topic: c.Topic, metadata: c.Metadata}
	if s.topic == "" {
		s.topic = "{stream}"
	}
	if s.pieces, err = parseSubscribeTopic(s.topic); err != nil {
		return nil, fmt.Errorf("%s: topic: %w", where, err)
	}
	s.hasPublisher = slices.Contains(s.pieces, topicPiece{placeholder: "publisher"})
	partitions := c.Partitions
	if len(partitions) == 0 {
		partitions = []int{0}
	}
	for _, p := range partitions {
		part, err := streamr.NewStreamPartID(id, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		s.parts = append(s.parts, part)
	}
	return s, nil
}

// Parts returns the stream partitions the subscription delivers.
func (s *Subscription) Parts() []streamr.StreamPartID { return s.parts }

// parseSubscribeTopic splits a topic template into literal text and
// placeholders.
func parseSubscribeTopic(t string) ([]topicPiece, error) {
	if strings.ContainsAny(t, "+#") {
		return nil, fmt.Errorf("%q: a topic to publish on cannot contain wildcards", t)
	}
	var pieces []topicPiece
	rest := t
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			if rest != "" {
				pieces = append(pieces, topicPiece{text: rest})
			}
			return pieces, nil
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q: unclosed '{'", t)
		}
		switch name := rest[open+1 : open+end]; name {
		case "stream", "partition", "publisher":
			if open > 0 {
				pieces = append(pieces, topicPiece{text: rest[:open]})
			}
			pieces = append(pieces, topicPiece{placeholder: name})
		default:
			return nil, fmt.Errorf("%q: unknown placeholder {%s}: want {stream}, {partition} or {publisher}", t, name)
		}
		rest = rest[open+end+1:]
	}
}

// Deliverer publishes messages received from the overlay on local MQTT,
// in chain order and without duplicates (through an Orderer).
type Deliverer struct {
	self    []byte // our publisher ID: our own messages are not echoed
	broker  LocalBroker
	order   *Orderer
	log     *slog.Logger
	metrics *deliveryMetrics
	joined  chan struct{} // closed once Run has joined every subscription's partitions
	keys    KeyExchange   // decrypts AES content; nil: encrypted messages are dropped
}

// SetKeyExchange makes the Deliverer decrypt encrypted content through kx
// (requesting missing keys) instead of dropping it. Call before Run.
func (d *Deliverer) SetKeyExchange(kx KeyExchange) { d.keys = kx }

type deliveryMetrics struct {
	delivered *prometheus.CounterVec
	dropped   *prometheus.CounterVec

	mu     sync.Mutex
	byPart map[streamr.StreamPartID]prometheus.Counter // delivered's series, by subscribed partition
}

// deliveredTo is the delivered counter of part, looked up without
// formatting its label for every message.
func (m *deliveryMetrics) deliveredTo(part streamr.StreamPartID) prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.byPart[part]
	if !ok {
		c = m.delivered.WithLabelValues(part.String())
		m.byPart[part] = c
	}
	return c
}

// NewDeliverer returns a Deliverer for the gateway whose publisher ID is
// self; order puts messages in chain order and fills gaps (Run runs it).
func NewDeliverer(self []byte, broker LocalBroker, order *Orderer, reg prometheus.Registerer, log *slog.Logger) *Deliverer {
	m := &deliveryMetrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_delivered_total", Help: "Overlay messages published on local MQTT, by stream partition.",
		}, []string{"stream_part"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_delivery_dropped_total", Help: "Overlay messages not delivered to local MQTT, by reason.",
		}, []string{"reason"}),
		byPart: make(map[streamr.StreamPartID]prometheus.Counter),
	}
	if reg != nil {
		reg.MustRegister(m.delivered, m.dropped)
	}
	return &Deliverer{self: bytes.Clone(self), broker: broker, order: order, log: componentLogger(log, "delivery"), metrics: m, joined: make(chan struct{})}
}

// Run joins the overlay of every partition of every subscription, then
// orders and delivers what arrives until ctx is done.
func (d *Deliverer) Run(ctx context.Context, overlay Overlay, subs []*Subscription) error {
	orderCtx, stopOrder := context.WithCancel(ctx)
	defer stopOrder()
	ordered := make(chan error, 1)
	go func() { ordered <- d.order.Run(orderCtx) }()
	if err := d.join(overlay, subs); err != nil {
		stopOrder()
		return errors.Join(err, <-ordered)
	}
	close(d.joined)
	return <-ordered
}

// Joined is closed once Run has joined the overlay for every subscription.
func (d *Deliverer) Joined() <-chan struct{} { return d.joined }

func (d *Deliverer) join(overlay Overlay, subs []*Subscription) error {
	for _, s := range subs {
		for _, part := range s.parts {
			topic, err := overlay.Join(part, d.handler(s))
			if err != nil {
				return fmt.Errorf("subscribe to %s: %w", part, err)
			}
			if d.keys != nil {
				d.keys.Attach(part, topic)
			}
			d.log.Info("subscribed", "stream_part", part.String(), "mqtt_topic", s.topic)
		}
	}
	return nil
}

func (d *Deliverer) handler(s *Subscription) func(*streamr.StreamMessage, []byte) {
	publish := func(m *streamr.StreamMessage, _ []byte) { d.deliver(s, m) }
	return func(m *streamr.StreamMessage, encoded []byte) {
		if bytes.Equal(m.ID.PublisherID, d.self) {
			d.metrics.dropped.WithLabelValues("own_message").Inc()
			return
		}
		if d.keys != nil && d.keys.HandleMessage(context.Background(), m) {
			return // key exchange traffic
		}
		if c := m.Content(); d.keys != nil && c != nil && c.EncryptionType != streamr.EncryptionNone {
			// Live messages wait for their key off the overlay's goroutine,
			// which must go on delivering (the key response among others).
			d.keys.Await(context.Background(), m, func(plain *streamr.StreamMessage, err error) {
				if err != nil {
					d.undecrypted(m, err)
					return
				}
				d.add(plain, encoded, publish)
			})
			return
		}
		d.add(m, encoded, publish)
	}
}

func (d *Deliverer) add(m *streamr.StreamMessage, encoded []byte, publish Deliver) {
	if err := d.order.Add(m, encoded, publish); err != nil {
		d.metrics.dropped.WithLabelValues("order_state").Inc()
		d.log.Warn("order message", "stream_part", m.ID.StreamPart().String(), "err", err)
	}
}

// undecrypted counts an encrypted message whose key could not be had:
// it is reported, never delivered as ciphertext.
func (d *Deliverer) undecrypted(m *streamr.StreamMessage, err error) {
	d.metrics.dropped.WithLabelValues("no_group_key").Inc()
	d.log.Warn("encrypted message not delivered", "stream_part", m.ID.StreamPart().String(),
		"publisher", m.ID.PublisherHex(), "message", m.ID.Ref().String(), "err", err)
}

func (d *Deliverer) deliver(s *Subscription, m *streamr.StreamMessage) {
	c := m.Content()
	switch {
	case c == nil:
		return // group key traffic is not for MQTT
	case c.EncryptionType != streamr.EncryptionNone && d.keys == nil:
		d.metrics.dropped.WithLabelValues("encrypted").Inc()
		return
	case c.EncryptionType != streamr.EncryptionNone:
		// History and gap fills arrive still encrypted, on the Orderer's
		// goroutine, which may wait (bounded) for the key.
		plain, err := d.keys.DecryptWait(context.Background(), m)
		if err != nil {
			d.undecrypted(m, err)
			return
		}
		m = plain
	}
	var publisher string // hex, only where the topic or the metadata shows it
	if s.metadata || s.hasPublisher {
		publisher = m.ID.PublisherHex()
	}
	payload, err := s.payload(m, publisher, d.order.IsHistory(m))
	if err != nil {
		d.metrics.dropped.WithLabelValues("bad_content").Inc()
		return
	}
	topic := s.mqttTopic(m, publisher)
	mark := appendMark(make([]byte, 0, 64), m.ID.Ref()) // room for the longest
	if err := d.broker.PublishMarked(topic, payload, 1, d.order.PositionKey(m), mark); err != nil {
		d.metrics.dropped.WithLabelValues("mqtt_publish").Inc()
		d.log.Warn("deliver to local MQTT", "topic", topic, "err", err)
		return
	}
	d.metrics.deliveredTo(m.ID.StreamPart()).Inc()
}

func (s *Subscription) mqttTopic(m *streamr.StreamMessage, publisher string) string {
	if len(s.pieces) == 1 && s.pieces[0].placeholder == "stream" {
		return string(m.ID.StreamID) // the default, "{stream}"
	}
	var b strings.Builder
	for _, p := range s.pieces {
		switch p.placeholder {
		case "stream":
			b.WriteString(string(m.ID.StreamID))
		case "partition":
			b.WriteString(strconv.Itoa(int(m.ID.StreamPartition)))
		case "publisher":
			b.WriteString(publisher)
		default:
			b.WriteString(p.text)
		}
	}
	return b.String()
}

// payload is the content, or the Streamr node's payloadMetadata envelope.
// Binary content goes into the envelope as a base64 string. A message
// delivered as history (see Orderer.IsHistory) has "history": true in its
// metadata.
func (s *Subscription) payload(m *streamr.StreamMessage, publisher string, history bool) ([]byte, error) {
	c := m.Content()
	if !s.metadata {
		return c.Content, nil
	}
	var content any = json.RawMessage(c.Content)
	if c.ContentType == streamr.ContentBinary {
		content = c.Content // encoding/json writes []byte as base64
	}
	meta := map[string]any{
		"streamId":        m.ID.StreamID,
		"streamPartition": m.ID.StreamPartition,
		"timestamp":       m.ID.Timestamp,
		"sequenceNumber":  m.ID.SequenceNumber,
		"publisherId":     publisher,
		"msgChainId":      m.ID.MsgChainID,
	}
	if history {
		meta["history"] = true
	}
	var buf bytes.Buffer
	err := json.NewEncoder(&buf).Encode(map[string]any{"content": content, "metadata": meta})
	return bytes.TrimRight(buf.Bytes(), "\n"), err
}

// WithOrderer returns a Deliverer that shares d's broker, logger and
// metrics but orders through order: subscriptions that share a stream
// partition each need their own delivered positions.
func (d *Deliverer) WithOrderer(order *Orderer) *Deliverer {
	c := *d
	c.order = order
	c.joined = make(chan struct{})
	return &c
}
