// Command mqttload is the MQTT load generator of Tributary's benchmarks:
// N publishers send JSON readings of a fixed size at QoS 1 (at a fixed
// total rate, or as fast as acknowledgements allow), and one subscriber
// receives them. It reports PUBLISH→PUBACK latency, throughput and
// end-to-end latency as one JSON object, so a script can compare brokers
// measured in the same run.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

type options struct {
	broker     string
	subBroker  string
	publishers int
	rate       int
	duration   time.Duration
	size       int
	qos        int
	inflight   int
	subscribe  bool
	prefix     string
	subTopic   string
	warmup     time.Duration
	timeline   string
}

// Result is what one run measured.
type Result struct {
	Published int64   `json:"published"`
	Acked     int64   `json:"acked"`
	Failed    int64   `json:"failed"`
	AckRate   float64 `json:"ack_rate"`
	AckP50Ms  float64 `json:"ack_p50_ms"`
	AckP99Ms  float64 `json:"ack_p99_ms"`
	Received  int64   `json:"received"`
	RecvRate  float64 `json:"recv_rate"`
	E2EP50Ms  float64 `json:"e2e_p50_ms"`
	E2EP99Ms  float64 `json:"e2e_p99_ms"`
	// The same after the warm-up: readings sent -warmup or later after
	// the first publish, so the start of a fresh process shows apart
	// from the steady state (both are reported, neither hides the other).
	E2ESteadyP50Ms float64 `json:"e2e_steady_p50_ms"`
	E2ESteadyP99Ms float64 `json:"e2e_steady_p99_ms"`
	E2EMaxMs       float64 `json:"e2e_max_ms"`
	// Per second of sending: p50, p99 and max end-to-end latency.
	E2ESeconds   []secondStats `json:"e2e_seconds,omitempty"`
	StartUnixNs  int64         `json:"start_unix_ns"` // first publish, to line the timeline up with logs
	DurationSecs float64       `json:"duration_s"`
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "127.0.0.1:1883", "broker address for publishers")
	flag.StringVar(&o.subBroker, "sub-broker", "", "broker address for the subscriber (default: -broker)")
	flag.IntVar(&o.publishers, "publishers", 10, "publisher clients")
	flag.IntVar(&o.rate, "rate", 0, "total messages per second (0: as fast as acks allow)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "publishing time")
	flag.IntVar(&o.size, "size", 200, "payload bytes (a JSON object)")
	flag.IntVar(&o.qos, "qos", 1, "publish QoS")
	flag.IntVar(&o.inflight, "inflight", 64, "unacknowledged publishes per client in max-rate mode")
	flag.BoolVar(&o.subscribe, "subscribe", true, "run one subscriber on <prefix>/#")
	flag.StringVar(&o.prefix, "prefix", "bench", "topic prefix: publishers use <prefix>/p<i>")
	flag.StringVar(&o.subTopic, "sub-topic", "", "subscriber's topic filter (default <prefix>/#)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "start of the run left out of the steady-state e2e percentiles")
	flag.StringVar(&o.timeline, "timeline", "", "file to write every reading's send offset and e2e latency to (CSV, ms)")
	flag.Parse()
	if o.subBroker == "" {
		o.subBroker = o.broker
	}
	if o.subTopic == "" {
		o.subTopic = o.prefix + "/#"
	}
	res, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttload:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

// recorder collects latencies from many goroutines.
type recorder struct {
	mu  sync.Mutex
	lat []time.Duration
}

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
}

func (r *recorder) percentile(p float64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return percentile(r.lat, p)
}

// percentile sorts lat and returns its p-quantile in milliseconds.
func percentile(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	i := int(p * float64(len(lat)-1))
	return float64(lat[i].Microseconds()) / 1000
}

// sample is one reading: when it was sent and how long its PUBACK (ack)
// or its arrival at the subscriber took.
type sample struct {
	sent, lat time.Duration
	ack       bool
}

// timeline keeps every end-to-end and PUBACK sample with its send time, so that a
// tail can be placed in the run (the start, or spread evenly).
type timeline struct {
	mu      sync.Mutex
	samples []sample
}

func (t *timeline) add(s sample) {
	t.mu.Lock()
	t.samples = append(t.samples, s)
	t.mu.Unlock()
}

// secondStats is the e2e latency of the readings sent in one second.
type secondStats struct {
	Second int     `json:"s"`
	N      int     `json:"n"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// summarize fills res's e2e figures: whole run, after warmup, per second.
func (t *timeline) summarize(res *Result, warmup time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var all, steady []time.Duration
	bySecond := map[int][]time.Duration{}
	for _, s := range t.samples {
		if s.ack {
			continue
		}
		all = append(all, s.lat)
		if s.sent >= warmup {
			steady = append(steady, s.lat)
		}
		sec := int(s.sent / time.Second)
		bySecond[sec] = append(bySecond[sec], s.lat)
	}
	res.E2EP50Ms, res.E2EP99Ms, res.E2EMaxMs = percentile(all, 0.5), percentile(all, 0.99), percentile(all, 1)
	res.E2ESteadyP50Ms, res.E2ESteadyP99Ms = percentile(steady, 0.5), percentile(steady, 0.99)
	for _, sec := range slices.Sorted(maps.Keys(bySecond)) {
		l := bySecond[sec]
		res.E2ESeconds = append(res.E2ESeconds, secondStats{sec, len(l), percentile(l, 0.5), percentile(l, 0.99), percentile(l, 1)})
	}
}

// write stores the samples as CSV: send offset and latency in ms.
func (t *timeline) write(path string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	b.WriteString("kind,sent_ms,latency_ms\n")
	for _, s := range t.samples {
		kind := "e2e"
		if s.ack {
			kind = "ack"
		}
		fmt.Fprintf(&b, "%s,%.3f,%.3f\n", kind, float64(s.sent.Microseconds())/1000, float64(s.lat.Microseconds())/1000)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	return nil
}

func run(o options) (*Result, error) {
	var (
		res                 Result
		ackLat              recorder
		e2e                 timeline
		firstRecv, lastRecv atomic.Int64
		start               atomic.Int64 // first publish, UnixNano
	)
	if o.subscribe {
		sub, err := connect(o.subBroker, "mqttload-sub")
		if err != nil {
			return nil, err
		}
		defer sub.Disconnect(100)
		handler := func(_ mqtt.Client, m mqtt.Message) {
			now := time.Now().UnixNano()
			firstRecv.CompareAndSwap(0, now)
			lastRecv.Store(now)
			atomic.AddInt64(&res.Received, 1)
			if sent, ok := sentAt(m.Payload()); ok {
				e2e.add(sample{sent: time.Duration(sent - start.Load()), lat: time.Duration(now - sent)})
			}
		}
		if tok := sub.Subscribe(o.subTopic, byte(o.qos), handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("subscribe: %v", tok.Error())
		}
	}
	clients := make([]mqtt.Client, o.publishers)
	for i := range clients {
		c, err := connect(o.broker, fmt.Sprintf("mqttload-pub-%d", i))
		if err != nil {
			return nil, err
		}
		defer c.Disconnect(100)
		clients[i] = c
	}
	t0 := time.Now()
	start.Store(t0.UnixNano())
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { publish(o, i, c, &res, &ackLat, &e2e, t0) })
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if o.subscribe {
		waitDrain(&res, &lastRecv)
	}
	res.DurationSecs = elapsed.Seconds()
	res.AckRate = float64(res.Acked) / elapsed.Seconds()
	res.AckP50Ms, res.AckP99Ms = ackLat.percentile(0.5), ackLat.percentile(0.99)
	if f, l := firstRecv.Load(), lastRecv.Load(); l > f {
		res.RecvRate = float64(res.Received) / (float64(l-f) / 1e9)
	}
	res.StartUnixNs = t0.UnixNano()
	e2e.summarize(&res, o.warmup)
	if o.timeline != "" {
		if err := e2e.write(o.timeline); err != nil {
			return nil, err
		}
	}
	return &res, nil
}

// waitDrain waits until the subscriber has received nothing for a second.
func waitDrain(res *Result, last *atomic.Int64) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if atomic.LoadInt64(&res.Received) >= atomic.LoadInt64(&res.Acked) {
			return
		}
		if l := last.Load(); l != 0 && time.Since(time.Unix(0, l)) > time.Second {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publish sends readings from one client, paced or with a window of
// unacknowledged publishes.
func publish(o options, id int, c mqtt.Client, res *Result, lat *recorder, tl *timeline, t0 time.Time) {
	topic := fmt.Sprintf("%s/p%d", o.prefix, id)
	window := make(chan struct{}, o.inflight)
	var interval time.Duration
	if o.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.publishers) / float64(o.rate))
	}
	end := time.Now().Add(o.duration)
	next := time.Now()
	var pending sync.WaitGroup
	for seq := 0; time.Now().Before(end); seq++ {
		if interval > 0 {
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
		window <- struct{}{}
		sent := time.Now()
		tok := c.Publish(topic, byte(o.qos), false, payload(o.size, seq, sent))
		atomic.AddInt64(&res.Published, 1)
		pending.Go(func() {
			defer func() { <-window }()
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				atomic.AddInt64(&res.Failed, 1)
				return
			}
			d := time.Since(sent)
			lat.add(d)
			tl.add(sample{sent: sent.Sub(t0), lat: d, ack: true})
			atomic.AddInt64(&res.Acked, 1)
		})
	}
	pending.Wait()
}

// payload is a JSON object of exactly size bytes carrying the send time.
func payload(size, seq int, sent time.Time) []byte {
	head := fmt.Sprintf(`{"seq":%d,"t":%d,"pad":"`, seq, sent.UnixNano())
	pad := max(size-len(head)-2, 0)
	return []byte(head + strings.Repeat("x", pad) + `"}`)
}

func sentAt(p []byte) (int64, bool) {
	var v struct{ T int64 }
	if json.Unmarshal(p, &v) != nil || v.T == 0 {
		return 0, false
	}
	return v.T, true
}

func connect(addr, id string) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetMessageChannelDepth(100_000).
		SetOrderMatters(false).SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect " + addr + ": timeout")
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return c, nil
}
