package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// ReceiptPolicy says whose receipts retention waits for.
type ReceiptPolicy string

// Receipt policies.
const (
	ReceiptsNone      ReceiptPolicy = "none"       // retention by age and size alone
	ReceiptsAnyStorer ReceiptPolicy = "any-storer" // some member of the partition's overlay holds the message
	ReceiptsAllListed ReceiptPolicy = "all-listed" // every listed peer holds the message
)

// ReceiptNetwork asks receivers for receipts; the overlay satisfies it.
type ReceiptNetwork interface {
	QueryReceipts(ctx context.Context, peerID string, part streamr.StreamPartID, publisher []byte) ([]streamr.ChainReceipt, error)
	PartitionPeers(part streamr.StreamPartID) []string
}

// ReceiptConfig configures a Receipts tracker.
type ReceiptConfig struct {
	Policy    ReceiptPolicy
	Peers     []string      // the required receivers for ReceiptsAllListed
	Publisher []byte        // this gateway: only its own messages wait for receipts
	Interval  time.Duration // how often receivers are asked (default 30s)
	Timeout   time.Duration // per query (default 5s)
	Logger    *slog.Logger
}

// Receipts records how far each receiver holds this gateway's chains, and
// is the storage's retention guard: a message may be deleted once the
// policy's receivers hold it. It is safe for concurrent use; Acknowledged
// answers from memory.
type Receipts struct {
	cfg ReceiptConfig
	pub string

	mu   sync.Mutex
	held map[streamr.StreamPartID]map[string]map[string]streamr.MessageRef // part → receiver → chain → last held
}

// NewReceipts returns a tracker; Run polls the receivers.
func NewReceipts(cfg ReceiptConfig) (*Receipts, error) {
	switch cfg.Policy {
	case "", ReceiptsNone:
		cfg.Policy = ReceiptsNone
	case ReceiptsAnyStorer:
	case ReceiptsAllListed:
		if len(cfg.Peers) == 0 {
			return nil, fmt.Errorf("receipts policy %q needs at least one peer", cfg.Policy)
		}
	default:
		return nil, fmt.Errorf("receipts policy %q: want none, any-storer or all-listed", cfg.Policy)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Receipts{cfg: cfg, pub: streamr.UserID(cfg.Publisher), held: make(map[streamr.StreamPartID]map[string]map[string]streamr.MessageRef)}, nil
}

// Acknowledged implements storage.RetentionGuard.
func (r *Receipts) Acknowledged(part streamr.StreamPartID, publisher []byte, chainID string, ref streamr.MessageRef) bool {
	if r.cfg.Policy == ReceiptsNone || streamr.UserID(publisher) != r.pub {
		return true // other publishers' messages are not ours to keep
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	byReceiver := r.held[part]
	holds := func(receiver string) bool {
		last, ok := byReceiver[receiver][chainID]
		return ok && ref.Compare(last) <= 0
	}
	if r.cfg.Policy == ReceiptsAllListed {
		for _, p := range r.cfg.Peers {
			if !holds(p) {
				return false
			}
		}
		return true
	}
	for receiver := range byReceiver {
		if holds(receiver) {
			return true
		}
	}
	return false
}

// Progress returns, per stream partition, how far each receiver holds each
// of this gateway's chains.
func (r *Receipts) Progress() map[string]map[string]map[string]streamr.MessageRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[string]map[string]streamr.MessageRef, len(r.held))
	for part, byReceiver := range r.held {
		p := make(map[string]map[string]streamr.MessageRef, len(byReceiver))
		for receiver, chains := range byReceiver {
			c := make(map[string]streamr.MessageRef, len(chains))
			for id, ref := range chains {
				c[id] = ref
			}
			p[receiver] = c
		}
		out[part.String()] = p
	}
	return out
}

// Run asks the receivers of parts() every Interval until ctx is done.
// Under ReceiptsNone it still asks each partition's peers, so that
// Progress (/receipts, the status page) shows how far they hold this
// gateway's chains; retention does not wait for them.
func (r *Receipts) Run(ctx context.Context, net ReceiptNetwork, parts func() ([]streamr.StreamPartID, error)) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		r.poll(ctx, net, parts)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *Receipts) poll(ctx context.Context, net ReceiptNetwork, parts func() ([]streamr.StreamPartID, error)) {
	ps, err := parts()
	if err != nil {
		r.cfg.Logger.Warn("list stream partitions for receipts", "err", err)
		return
	}
	for _, part := range ps {
		receivers := r.cfg.Peers
		if r.cfg.Policy != ReceiptsAllListed {
			receivers = net.PartitionPeers(part)
		}
		for _, peer := range receivers {
			qctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			receipts, err := net.QueryReceipts(qctx, peer, part, r.cfg.Publisher)
			cancel()
			if err != nil {
				r.cfg.Logger.Debug("receipt query failed", "peer", peer, "stream_part", part.String(), "err", err)
				continue
			}
			r.record(part, peer, receipts)
		}
	}
}

// record keeps a receiver's receipts. Positions only move forward: a
// receiver that lost data and answers less is not believed below what it
// claimed before (retention may already have acted on the claim).
func (r *Receipts) record(part streamr.StreamPartID, receiver string, receipts []streamr.ChainReceipt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byReceiver := r.held[part]
	if byReceiver == nil {
		byReceiver = make(map[string]map[string]streamr.MessageRef)
		r.held[part] = byReceiver
	}
	chains := byReceiver[receiver]
	if chains == nil {
		chains = make(map[string]streamr.MessageRef)
		byReceiver[receiver] = chains
	}
	for _, rc := range receipts {
		if old, ok := chains[rc.ChainID]; !ok || rc.Last.Compare(old) > 0 {
			chains[rc.ChainID] = rc.Last
		}
	}
}
