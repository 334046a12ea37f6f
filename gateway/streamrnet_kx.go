package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/e2ee"
	"github.com/tributary-iot/tributary/streamr"
)

// errKeyExchangeQueueFull is what a key exchange message gets when the
// Streamr Network sender's queue is full.
var errKeyExchangeQueueFull = errors.New("streamr_network.key_exchange_queue is full")

// kxSender publishes key exchange messages (issue 18) into the Streamr
// Network off the caller's goroutine. e2ee answers a GroupKeyRequest, and
// requests a missing key, from inside the delivery of a message, which
// runs on a proxy connection's read loop; a publish waits for the node's
// answer on that same loop, so it must not run there.
type kxSender struct {
	publish  func(ctx context.Context, streamPart string, encoded [][]byte) (int, error)
	queue    chan kxItem
	patience time.Duration // how long a message is retried while no proxy has its partition
	log      *slog.Logger
	results  *prometheus.CounterVec

	mu     sync.Mutex
	logged map[string]time.Time
}

type kxItem struct {
	part    string
	encoded [][]byte
}

func newKXSender(publish func(context.Context, string, [][]byte) (int, error), size int, patience time.Duration, reg prometheus.Registerer, log *slog.Logger) *kxSender {
	k := &kxSender{
		publish: publish, queue: make(chan kxItem, size), patience: patience, log: log, logged: make(map[string]time.Time),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_streamr_network_key_exchange_total",
			Help: "Key exchange messages (group key requests and responses) sent into the Streamr Network, by result: sent, failed (no proxy took it in time), queue_full (streamr_network.key_exchange_queue).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(k.results)
	}
	return k
}

// topic is the e2ee.Topic of one stream partition.
func (k *kxSender) topic(part streamr.StreamPartID) e2ee.Topic { return kxTopic{k, part.String()} }

type kxTopic struct {
	k    *kxSender
	part string
}

// Publish queues the messages and returns at once.
func (t kxTopic) Publish(_ context.Context, encoded [][]byte) (int, error) {
	select {
	case t.k.queue <- kxItem{t.part, encoded}:
		return len(encoded), nil
	default:
		t.k.results.WithLabelValues("queue_full").Add(float64(len(encoded)))
		t.k.warn("queue_full", "key exchange message not sent to the Streamr Network: queue full", "stream_part", t.part, "max", cap(t.k.queue))
		return 0, errKeyExchangeQueueFull
	}
}

// run sends what is queued until ctx ends.
func (k *kxSender) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-k.queue:
			k.send(ctx, it)
		}
	}
}

// send publishes one queued item, retrying while no proxy has accepted
// the partition yet (the proxy connection of a key responder is made
// when the first encrypted reading is signed), for up to patience.
func (k *kxSender) send(ctx context.Context, it kxItem) {
	deadline := time.Now().Add(k.patience)
	for {
		_, err := k.publish(ctx, it.part, it.encoded)
		if err == nil {
			k.results.WithLabelValues("sent").Add(float64(len(it.encoded)))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			k.results.WithLabelValues("failed").Add(float64(len(it.encoded)))
			k.warn("failed", "key exchange message not sent to the Streamr Network", "stream_part", it.part, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// warn logs once a minute per kind.
func (k *kxSender) warn(kind, msg string, args ...any) {
	k.mu.Lock()
	last, seen := k.logged[kind]
	now := time.Now()
	if seen && now.Sub(last) < time.Minute {
		k.mu.Unlock()
		return
	}
	k.logged[kind] = now
	k.mu.Unlock()
	k.log.Warn(msg, append(args, "kind", kind)...)
}

// keyTopics gives e2ee one topic per stream partition that publishes on
// every network the gateway has the partition on (the overlay, the
// Streamr Network): a request or answer goes where the other side may be.
type keyTopics struct {
	x  *e2ee.Exchange
	sn *kxSender // nil without [streamr_network]

	mu    sync.Mutex
	parts map[streamr.StreamPartID]map[string]e2ee.Topic // by network
}

func newKeyTopics(x *e2ee.Exchange) *keyTopics {
	return &keyTopics{x: x, parts: make(map[streamr.StreamPartID]map[string]e2ee.Topic)}
}

// attach sets a network's topic of part (one per network: a partition
// joined twice there publishes once). A Streamr Network handle is
// replaced by the sender's topic, which does not block.
func (k *keyTopics) attach(part streamr.StreamPartID, t e2ee.Topic) {
	network := "overlay"
	if _, ok := t.(*snHandle); ok && k.sn != nil {
		network, t = sourceStreamrNetwork, k.sn.topic(part)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	byNet := k.parts[part]
	if byNet == nil {
		byNet = make(map[string]e2ee.Topic)
		k.parts[part] = byNet
	}
	byNet[network] = t
	k.x.Attach(part, fanoutTopic(slices.Collect(maps.Values(byNet))))
}

// fanoutTopic publishes on each topic; it succeeds if one did.
type fanoutTopic []e2ee.Topic

// Publish implements e2ee.Topic.
func (f fanoutTopic) Publish(ctx context.Context, encoded [][]byte) (int, error) {
	var errs []error
	for _, t := range f {
		if _, err := t.Publish(ctx, encoded); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(f) {
		return 0, fmt.Errorf("key exchange message: %w", errors.Join(errs...))
	}
	return len(encoded), nil
}

// deliveryKeys is the key exchange the Deliverers use: the exchange,
// with their partitions' topics attached through keyTopics.
type deliveryKeys struct {
	*e2ee.Exchange
	topics *keyTopics
}

// Attach implements bridge.KeyExchange.
func (d deliveryKeys) Attach(part streamr.StreamPartID, t interface {
	Publish(ctx context.Context, encoded [][]byte) (int, error)
}) {
	d.topics.attach(part, t)
}

var _ bridge.KeyExchange = deliveryKeys{}
