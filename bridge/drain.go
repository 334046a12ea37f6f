package bridge

import (
	"context"
	"errors"
	"time"
)

// ErrHeld is why Drain stops with readings left under the hold policy:
// they wait, unsigned, for the clock to be synchronised.
var ErrHeld = errors.New("the clock is not synchronised and the hold policy keeps readings unsigned until it is")

// Drain signs every pending reading, in chain order, through the signer
// Run uses, so a later Run continues the same chains. It returns how many
// readings it signed and, if it stopped with readings left, why: ErrHeld,
// or the cause of ctx ending joined with the last signing error. A failed
// batch is retried every PollInterval until ctx ends. Drain must not run
// while Run does.
func (p *Pipeline) Drain(ctx context.Context) (int, error) {
	s := p.signer
	s.max = min(firstDrainBatch, p.cfg.SignBatch)
	defer func() { s.max = 0 }()
	total := 0
	var lastErr error
	for {
		start := time.Now()
		n, err := s.signBatch(ctx)
		total += n
		if n > 0 {
			s.max = nextDrainBatch(n, time.Since(start), p.cfg.SignBatch)
		}
		switch {
		case ctx.Err() != nil:
			return total, errors.Join(context.Cause(ctx), lastErr)
		case err != nil:
			if lastErr == nil {
				p.log.Warn("signing failed while draining; retrying", "retry", p.cfg.PollInterval, "err", err)
			}
			lastErr = err
			if !sleepCtx(ctx, p.cfg.PollInterval) {
				return total, errors.Join(context.Cause(ctx), lastErr)
			}
		case n > 0:
			lastErr = nil
		case p.isHolding():
			return total, ErrHeld
		default:
			return total, nil
		}
	}
}

// A batch is committed only whole, so a drain sizes its batches to take
// about drainBatchTime each: with a slow hardware signer, a stop timeout
// then cuts off at most that much signing work, not a whole SignBatch.
const (
	drainBatchTime  = 500 * time.Millisecond
	firstDrainBatch = 16
)

// nextDrainBatch sizes the next batch from the last one, which signed n
// readings in took, between 1 and limit.
func nextDrainBatch(n int, took time.Duration, limit int) int {
	next := int(float64(n) * float64(drainBatchTime) / float64(max(took, time.Millisecond)))
	return max(1, min(next, limit))
}

func (p *Pipeline) isHolding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holding
}

// sleepCtx waits for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
