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
	total := 0
	var lastErr error
	for {
		n, err := p.signer.signBatch(ctx)
		total += n
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
