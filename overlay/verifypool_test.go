package overlay

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestVerifyPool: a batch's results come back in the frames' order, a
// forged or garbled frame rejected at its own index, whatever the number
// of workers; with every worker busy a batch waits, counted, until one is
// free.
func TestVerifyPool(t *testing.T) {
	s := newResendSet(t)
	v := resendNode(t, s, nil, nil).validatorFor(s.part)
	tampered := mustDecode(t, encode(t, s.msgs[3]))
	tampered.Content().Content = []byte(`{"temp":99}`)
	var frames [][]byte
	for i, m := range s.msgs[:len(s.msgs)-1] { // all of s.part
		switch i {
		case 3:
			frames = append(frames, encode(t, tampered))
		case 7:
			frames = append(frames, []byte{0xff, 0x01})
		default:
			frames = append(frames, encode(t, m))
		}
	}
	for _, workers := range []int{1, 2, 5} {
		waits := prometheus.NewCounter(prometheus.CounterOpts{Name: "waits"})
		p := newVerifyPool(workers, waits, slog.New(slog.DiscardHandler))
		got := p.check(v, frames)
		for i, c := range got {
			switch {
			case i == 3 || i == 7:
				if !errors.Is(c.err, ErrInvalidMessage) || c.verdict != reject {
					t.Errorf("%d workers: frame %d: verdict %v, err %v; want rejected as invalid", workers, i, c.verdict, c.err)
				}
			case c.err != nil:
				t.Errorf("%d workers: frame %d: %v", workers, i, c.err)
			case !bytes.Equal(encode(t, c.m), frames[i]):
				t.Errorf("%d workers: result %d is not frame %d's message", workers, i, i)
			}
		}
		if n := testutil.ToFloat64(waits); n != 0 {
			t.Errorf("%d workers: %v waits with the pool idle", workers, n)
		}
	}

	waits := prometheus.NewCounter(prometheus.CounterOpts{Name: "waits"})
	p := newVerifyPool(2, waits, slog.New(slog.DiscardHandler))
	p.slots <- struct{}{} // both workers busy elsewhere
	p.slots <- struct{}{}
	done := p.checkAsync(v, frames[:3])
	for testutil.ToFloat64(waits) == 0 {
		time.Sleep(time.Millisecond) // until the batch is waiting for a worker
	}
	<-p.slots
	if got := <-done; len(got) != 3 || got[2].err != nil {
		t.Fatalf("batch after the wait: %d results, %v", len(got), got[2].err)
	}
	<-p.slots
	if len(p.slots) != 0 {
		t.Errorf("%d worker slots still taken after the batches", len(p.slots))
	}
}
