package overlay

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// verifyPool bounds how many goroutines of a node verify messages in
// batches (resend answers), whichever answer they belong to: a node
// catching up is limited by signature recovery, which should use every
// core but not more, so that several answers read at once (gap fills of
// many partitions) share the cores instead of multiplying goroutines.
// A batch takes as many free workers as it has use for, at least one; it
// waits for one when all are busy, which holds its reader back, and so
// the peer sending, through the stream's flow control.
type verifyPool struct {
	slots  chan struct{} // one token per busy worker
	waits  prometheus.Counter
	log    *slog.Logger
	logged atomic.Bool
}

func newVerifyPool(workers int, waits prometheus.Counter, log *slog.Logger) *verifyPool {
	return &verifyPool{slots: make(chan struct{}, max(workers, 1)), waits: waits, log: log}
}

// check validates frames with v on free workers and returns the results
// in the frames' order.
func (p *verifyPool) check(v *validator, frames [][]byte) []checked {
	out := make([]checked, len(frames))
	if len(frames) == 0 {
		return out
	}
	workers := p.acquire(len(frames))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			defer func() { <-p.slots }()
			for i := int(next.Add(1) - 1); i < len(frames); i = int(next.Add(1) - 1) {
				m, verdict, _, err := v.check(frames[i])
				out[i] = checked{m: m, verdict: verdict, err: err}
			}
		})
	}
	wg.Wait()
	return out
}

// checkAsync is check in the background; the channel yields the results
// once.
func (p *verifyPool) checkAsync(v *validator, frames [][]byte) <-chan []checked {
	done := make(chan []checked, 1)
	go func() { done <- p.check(v, frames) }()
	return done
}

// acquire takes up to want worker slots, waiting for the first one if
// every worker is busy.
func (p *verifyPool) acquire(want int) int {
	want = min(want, cap(p.slots))
	got := p.tryAcquire(want)
	if got > 0 {
		return got
	}
	p.waits.Inc()
	if !p.logged.Swap(true) {
		p.log.Info("every resend verify worker is busy: catching up at the speed of signature verification",
			"resend_verify_workers", cap(p.slots))
	}
	p.slots <- struct{}{}
	return 1 + p.tryAcquire(want-1)
}

// tryAcquire takes up to want free slots without waiting.
func (p *verifyPool) tryAcquire(want int) int {
	for got := range want {
		select {
		case p.slots <- struct{}{}:
		default:
			return got
		}
	}
	return want
}
