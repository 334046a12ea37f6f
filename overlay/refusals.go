package overlay

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Rules under which the node refuses a peer's request, the "rule" label
// of tributary_overlay_refused_total.
const (
	ruleTopicName      = "topic_name"       // a subscription outside the /tributary/2/<stream part> scheme
	ruleTopicsPerRPC   = "topics_per_rpc"   // an RPC announcing more subscriptions than a peer may hold
	ruleTopicsPerPeer  = "topics_per_peer"  // subscriptions beyond max_peer_topics
	ruleConnsPerIP     = "conns_per_ip"     // the resource manager's per-address or per-subnet limit
	ruleConnsFull      = "conns_full"       // inbound connection slots all taken
	ruleResendPerPeer  = "resend_per_peer"  // the peer already has its share of resend answers
	ruleResendBusy     = "resend_busy"      // every general resend slot is taken
	ruleInvalidMessage = "invalid_messages" // gossip that failed validation (logged here, counted in drops_total)
	ruleRegistry       = "registry"         // gossip the StreamRegistry refused or could not judge (logged here, counted in drops_total)
	ruleShed           = "shed"             // gossip shed after waiting longer than shed_queue_wait (logged here, counted in drops_total)
)

// DefaultLogRepeatInterval is how often one kind of refusal is logged at
// most.
const DefaultLogRepeatInterval = 10 * time.Second

// refusals counts what the node refuses to peers, by rule, and logs each
// rule at most once per interval with the number of lines held back, so a
// hostile peer repeating a refused request costs a counter increment, not
// a log line.
type refusals struct {
	count    *prometheus.CounterVec
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[string]*heldBack // by rule: the keys are a fixed set
}

type heldBack struct {
	at    time.Time
	lines uint64
}

func newRefusals(log *slog.Logger, interval time.Duration) *refusals {
	return &refusals{
		count: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tributary", Subsystem: "overlay", Name: "refused_total",
			Help: "Peer requests refused by a protective limit, by rule (see the README's security table).",
		}, []string{"rule"}),
		log:      log,
		interval: interval,
		now:      time.Now,
		last:     make(map[string]*heldBack),
	}
}

// refuse counts n refusals under rule and logs msg with args, unless a
// line of that rule was logged within the interval. args must never carry
// payload bytes.
func (r *refusals) refuse(rule string, n int, msg string, args ...any) {
	r.count.WithLabelValues(rule).Add(float64(n))
	r.logOnce(rule, msg, args...)
}

// logOnce logs under rule's rate limit without counting.
func (r *refusals) logOnce(rule, msg string, args ...any) {
	held, ok := r.allow(rule)
	if !ok {
		return
	}
	args = append(args, "rule", rule)
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	r.log.Warn(msg, args...)
}

func (r *refusals) allow(rule string) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	h := r.last[rule]
	switch {
	case h == nil:
		r.last[rule] = &heldBack{at: now}
		return 0, true
	case now.Sub(h.at) < r.interval:
		h.lines++
		return 0, false
	}
	held := h.lines
	h.at, h.lines = now, 0
	return held, true
}
