package bridge

import (
	"context"
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

// signer is the pipeline's signing stage. It runs on one goroutine, so the
// chain cache needs no lock, and readings are signed in ingest order.
type signer struct {
	p      *Pipeline
	after  uint64 // readings up to this Seq are signed and committed
	chains map[string]*streamr.Chain
	max    int // readings per batch; 0 means Config.SignBatch (Drain sets it)
}

// signBatch signs and commits up to SignBatch pending readings. It returns
// how many it committed.
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
	now := time.Now()
	for i := range readings {
		if r := &readings[i]; r.ReceivedAt > 0 {
			p.metrics.signDelay.Observe(float64(now.UnixMilli()-r.ReceivedAt) / 1e3)
		}
	}
	p.metrics.signed.Add(float64(len(signed)))
	if p.cfg.Committed != nil {
		p.cfg.Committed()
	}
	p.noteState(true, false, true)
	return len(signed), nil
}

// sign builds and signs one message per reading, advancing the chains.
func (s *signer) sign(ctx context.Context, readings []storage.Reading) ([]storage.Signed, map[string]streamr.ChainState, error) {
	out := make([]storage.Signed, 0, len(readings))
	dirty := make(map[string]streamr.ChainState)
	for i := range readings {
		r := &readings[i]
		key := chainKey(r.Part, r.Source)
		chain, err := s.chain(key)
		if err != nil {
			return nil, dirty, err
		}
		ref, prev := chain.Next(s.timestamp(r))
		dirty[key] = chain.State()
		msg := &streamr.StreamMessage{
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
		start := time.Now()
		if err := streamr.SignMessage(ctx, s.p.cfg.Signer, msg); err != nil {
			return nil, dirty, fmt.Errorf("reading %d: %w", r.Seq, err)
		}
		s.p.metrics.signSeconds.Observe(time.Since(start).Seconds())
		encoded, err := msg.Marshal()
		if err != nil {
			return nil, dirty, fmt.Errorf("reading %d: %w", r.Seq, err)
		}
		out = append(out, storage.Signed{ReadingSeq: r.Seq, Msg: msg, Encoded: encoded})
	}
	return out, dirty, nil
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

func (s *signer) chain(key string) (*streamr.Chain, error) {
	if c, ok := s.chains[key]; ok {
		return c, nil
	}
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
	s.chains[key] = c
	return c, nil
}

func (s *signer) forget(dirty map[string]streamr.ChainState) {
	for key := range dirty {
		delete(s.chains, key)
	}
}

// chainKey names the chain of one MQTT client in one stream partition.
func chainKey(part streamr.StreamPartID, source string) string {
	return part.String() + "\x00" + source
}
