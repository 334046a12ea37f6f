package bridge

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// signer is the pipeline's signing stage: Run's goroutine signs pending
// readings in ingest order, and the store's group committer presigns new
// readings while none is pending (presign.go). mu serialises the two, so
// each chain advances in one order.
type signer struct {
	p *Pipeline

	mu     sync.Mutex
	chains map[chainRef]*signerChain

	// after and max belong to the goroutine that calls signBatch (Run,
	// then Drain; never both at once).
	after uint64 // readings up to this Seq are signed and committed
	max   int    // readings per batch; 0 means Config.SignBatch (Drain sets it)

	// presigned holds the batches the store is committing after Presign,
	// oldest first (the store signs the next batch while the one before
	// is being committed): their readings, and their chain states to
	// forget if the commit fails. It has its own lock, so that a commit
	// that landed is reported (and its readings acknowledged) while the
	// next batch is being signed under mu.
	presignedMu sync.Mutex
	presigned   []presignedBatch

	// calibrated is the signer's speed (ns, 0 until measured at start):
	// the fastest signature seen, at start or since, as scheduling delays
	// only add time (a start on a busy CPU must not keep presigning off
	// for good); perSignature is a moving average of signature wall time (ns).
	calibrated   atomic.Int64
	perSignature atomic.Int64
	maxPresign   atomic.Int64 // slowest calibrated signature (ns) Presign accepts
}

// chainRef names the chain of one MQTT client in one stream partition
// without building its storage key (chainKey) for every reading.
type chainRef struct {
	part   streamr.StreamPartID
	source string
}

// signerChain is a chain in memory with its storage key.
type signerChain struct {
	key   string // chainKey(part, source)
	chain *streamr.Chain
}

type presignedBatch struct {
	readings []storage.Reading
	chains   map[string]streamr.ChainState
}

func newSigner(p *Pipeline) *signer {
	s := &signer{p: p, chains: make(map[chainRef]*signerChain)}
	s.maxPresign.Store(int64(p.cfg.PresignMax))
	return s
}

// signBatch signs and commits up to SignBatch pending readings. It returns
// how many it committed. It looks for pending readings without holding
// s.mu (only its own goroutine moves s.after): while readings are signed
// in the group commit that look finds nothing, on every wake-up, and the
// group commit must not wait for it to presign the next batch.
func (s *signer) signBatch(ctx context.Context) (int, error) {
	p := s.p
	max := p.cfg.SignBatch
	if s.max > 0 {
		max = s.max
	}
	readings, err := p.cfg.Log.Pending(s.after, max)
	if err != nil {
		p.noteState(true, false, false)
		return 0, fmt.Errorf("read pending readings: %w", err)
	}
	p.metrics.queueDepth.Set(float64(len(readings)))
	if len(readings) == 0 {
		p.noteState(false, false, false)
		return 0, nil
	}
	if p.cfg.HoldUnsynced && !p.cfg.Clock.Synced() {
		p.metrics.held.Set(1)
		p.noteState(true, true, false)
		return 0, nil
	}
	p.metrics.held.Set(0)
	s.mu.Lock()
	defer s.mu.Unlock()
	signed, dirty, err := s.sign(ctx, readings)
	if err == nil {
		err = p.cfg.Log.CommitSigned(ctx, signed, dirty)
	}
	if err != nil {
		s.forget(dirty) // the chain states in memory ran ahead of storage
		p.noteState(true, false, false)
		return 0, fmt.Errorf("sign and commit readings %d-%d: %w", readings[0].Seq, readings[len(readings)-1].Seq, err)
	}
	s.after = readings[len(readings)-1].Seq
	s.committed(readings)
	return len(signed), nil
}

// committed records a committed batch of signed readings.
func (s *signer) committed(readings []storage.Reading) {
	p := s.p
	now := time.Now()
	for i := range readings {
		if r := &readings[i]; r.ReceivedAt > 0 {
			p.metrics.signDelay.Observe(float64(now.UnixMilli()-r.ReceivedAt) / 1e3)
		}
	}
	p.metrics.signed.Add(float64(len(readings)))
	if p.cfg.Committed != nil {
		p.cfg.Committed()
	}
	p.noteState(true, false, true)
}

// sign builds one message per reading, advancing the chains in reading
// order, then signs and encodes them. The caller holds s.mu.
func (s *signer) sign(ctx context.Context, readings []storage.Reading) ([]storage.Signed, map[string]streamr.ChainState, error) {
	out := make([]storage.Signed, len(readings))
	dirty := make(map[string]streamr.ChainState)
	var touched []*signerChain // the chains in dirty, whose states are taken once, at the end
	for i := range readings {
		r := &readings[i]
		c, err := s.chain(chainRef{part: r.Part, source: r.Source})
		if err != nil {
			return nil, dirty, err
		}
		if _, ok := dirty[c.key]; !ok {
			dirty[c.key] = streamr.ChainState{} // until the end; on an error only the keys count (forget)
			touched = append(touched, c)
		}
		chain := c.chain
		ref, prev := chain.Next(s.timestamp(r))
		out[i].ReadingSeq = r.Seq
		out[i].Msg = &streamr.StreamMessage{
			ID: streamr.MessageID{
				StreamID:        r.Part.Stream,
				StreamPartition: int32(r.Part.Partition),
				Timestamp:       ref.Timestamp,
				SequenceNumber:  ref.SequenceNumber,
				MsgChainID:      chain.ID(),
			},
			PrevMsgRef: prev,
			Body:       &streamr.ContentMessage{Content: r.Payload, ContentType: r.ContentType},
		}
		if r.Encrypt {
			if err := s.encryptContent(ctx, out[i].Msg); err != nil {
				return nil, dirty, fmt.Errorf("reading %d: %w", r.Seq, err)
			}
		}
	}
	for _, c := range touched {
		dirty[c.key] = c.chain.State()
	}
	return out, dirty, s.signAll(ctx, out)
}

// signAll signs and encodes msgs on up to GOMAXPROCS goroutines: a
// signature covers one message alone (the previous message is referred to
// by its ID, not its signature), so a batch's signatures are independent.
// Signers are safe for concurrent use (hw.Key's contract); those that are
// one device serialise internally.
func (s *signer) signAll(ctx context.Context, msgs []storage.Signed) error {
	workers := min(runtime.GOMAXPROCS(0), len(msgs))
	errs := make([]error, workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(msgs) && errs[w] == nil; i = int(next.Add(1) - 1) {
				errs[w] = s.signOne(ctx, &msgs[i])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// signOne signs and encodes one message.
func (s *signer) signOne(ctx context.Context, sm *storage.Signed) error {
	start := time.Now()
	if err := streamr.SignMessage(ctx, s.p.cfg.Signer, sm.Msg); err != nil {
		return fmt.Errorf("reading %d: %w", sm.ReadingSeq, err)
	}
	took := time.Since(start)
	s.p.metrics.signSeconds.Observe(took.Seconds())
	s.observeSignature(took)
	encoded, err := sm.Msg.Marshal()
	if err != nil {
		return fmt.Errorf("reading %d: %w", sm.ReadingSeq, err)
	}
	sm.Encoded = encoded
	return nil
}

// observeSignature folds one signature's time into the moving average
// (weight 1/16); concurrent updates may lose one, which an average allows.
func (s *signer) observeSignature(d time.Duration) {
	s.observeFastest(d)
	old := s.perSignature.Load()
	if old == 0 {
		s.perSignature.Store(max(int64(d), 1))
		return
	}
	s.perSignature.Store(old + (int64(d)-old)/16)
}

// timestamp picks a reading's message time: its own timestamp if it had
// one, else its receipt time. A reading received while the clock was not
// synchronised (ReceivedAt 0, hold policy) is dated from the boot clock if
// it arrived in this run, and gets the signing time otherwise; the chain
// keeps either monotonic.
func (s *signer) timestamp(r *storage.Reading) int64 {
	switch {
	case r.Timestamp > 0:
		return r.Timestamp
	case r.ReceivedAt > 0:
		return r.ReceivedAt
	}
	clock := s.p.cfg.Clock
	now := clock.Now().UnixMilli()
	if start := s.p.startSeq.Load(); start != 0 && r.Seq >= start {
		if age := clock.BootNanos() - r.BootNanos; age >= 0 {
			return now - age/int64(time.Millisecond)
		}
	}
	return now
}

func (s *signer) chain(ref chainRef) (*signerChain, error) {
	if c, ok := s.chains[ref]; ok {
		return c, nil
	}
	key := chainKey(ref.part, ref.source)
	state, ok, err := s.p.cfg.Log.ChainState(key)
	if err != nil {
		return nil, fmt.Errorf("load chain state: %w", err)
	}
	var c *streamr.Chain
	if ok {
		if c, err = streamr.RestoreChain(state); err != nil {
			return nil, err
		}
	} else {
		c = streamr.NewChain(streamr.NewChainID())
	}
	sc := &signerChain{key: key, chain: c}
	s.chains[ref] = sc
	return sc, nil
}

// forget drops the chains of dirty from memory; they are loaded again
// from storage when next used.
func (s *signer) forget(dirty map[string]streamr.ChainState) {
	for ref, c := range s.chains {
		if _, ok := dirty[c.key]; ok {
			delete(s.chains, ref)
		}
	}
}

// chainKey names the chain of one MQTT client in one stream partition.
func chainKey(part streamr.StreamPartID, source string) string {
	return part.String() + "\x00" + source
}
