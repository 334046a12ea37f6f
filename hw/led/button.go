package led

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// DefaultHold is how long the button must be held to act.
const DefaultHold = 3 * time.Second

// buttonPoll is how often the button is sampled; it also debounces.
const buttonPoll = 50 * time.Millisecond

// Button calls OnHold when its pin (active low, internal pull-up: a
// button to ground) is held down for Hold.
type Button struct {
	Pin    gpio.PinIn
	Hold   time.Duration                     // if 0, DefaultHold
	OnHold func(ctx context.Context)         // called on Run's goroutine once per press
	Logger *slog.Logger                      // if nil, logs are discarded
	ticks  func() (<-chan time.Time, func()) // tests replace the poll ticker
}

// Run samples the button until ctx ends, then returns nil.
func (b *Button) Run(ctx context.Context) error {
	if err := b.Pin.In(gpio.PullUp, gpio.NoEdge); err != nil {
		return fmt.Errorf("configure button pin %s: %w", b.Pin, err)
	}
	hold := b.Hold
	if hold <= 0 {
		hold = DefaultHold
	}
	need := int((hold + buttonPoll - 1) / buttonPoll)
	ticks := b.ticks
	if ticks == nil {
		ticks = func() (<-chan time.Time, func()) {
			t := time.NewTicker(buttonPoll)
			return t.C, t.Stop
		}
	}
	tick, stop := ticks()
	defer stop()
	down := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
		if b.Pin.Read() == gpio.High {
			down = 0
			continue
		}
		down++
		if down == need {
			b.logger().Info("button held", "pin", b.Pin.String(), "hold", hold)
			b.OnHold(ctx)
		}
	}
}

func (b *Button) logger() *slog.Logger {
	if b.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Logger.With("component", "button")
}
