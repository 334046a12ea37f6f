// Package led drives the gateway's optional status LED and reads its
// optional push button through periph GPIO.
//
// The LED shows the gateway state by blink pattern, in 250 ms steps:
//
//	Online     steady on
//	Buffering  slow blink: 1 s on, 1 s off (readings are stored, the overlay is unreachable)
//	Fault      fast blink: 250 ms on, 250 ms off
//	Off        off (shutdown)
//
// Holding the button for Button.Hold (default 3 s) calls its OnHold action
// once per press; the bridge wires it to "flush the buffer and log the
// status".
package led

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// State is what the LED shows.
type State int32

// States, in increasing severity.
const (
	Off State = iota
	Online
	Buffering
	Fault
)

func (s State) String() string {
	switch s {
	case Off:
		return "off"
	case Online:
		return "online"
	case Buffering:
		return "buffering"
	case Fault:
		return "fault"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Step is the LED's pattern resolution.
const Step = 250 * time.Millisecond

// patterns are one period of each state's blink, one level per Step.
var patterns = map[State][]gpio.Level{
	Off:       {gpio.Low},
	Online:    {gpio.High},
	Buffering: {gpio.High, gpio.High, gpio.High, gpio.High, gpio.Low, gpio.Low, gpio.Low, gpio.Low},
	Fault:     {gpio.High, gpio.Low},
}

// Level is the LED level of state at step n of its pattern.
func Level(s State, n int) gpio.Level {
	p, ok := patterns[s]
	if !ok {
		p = patterns[Fault]
	}
	return p[n%len(p)]
}

// OpenPin initialises periph's host drivers and returns the named GPIO
// (for example "GPIO17"), for the optional led_pin and button_pin settings.
func OpenPin(name string) (gpio.PinIO, error) {
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("periph host init: %w", err)
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("GPIO pin %q not found", name)
	}
	return p, nil
}

// LED blinks a GPIO output by state. Set may be called from any goroutine.
type LED struct {
	pin   gpio.PinOut
	state atomic.Int32
	log   *slog.Logger
	ticks func() (<-chan time.Time, func()) // tests replace the Step ticker
}

// New returns an LED on pin, initially Off, logging to log (nil discards)
// as component "led".
func New(pin gpio.PinOut, log *slog.Logger) *LED {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "led")
	return &LED{pin: pin, log: log, ticks: func() (<-chan time.Time, func()) {
		t := time.NewTicker(Step)
		return t.C, t.Stop
	}}
}

// Set changes what the LED shows from its next step on.
func (l *LED) Set(s State) { l.state.Store(int32(s)) }

// State returns what the LED shows.
func (l *LED) State() State { return State(l.state.Load()) }

// Run drives the pin until ctx ends, then switches the LED off and
// returns nil. A pin error is logged once and retried on the next step.
func (l *LED) Run(ctx context.Context) error {
	tick, stop := l.ticks()
	defer stop()
	failing := false
	for n := 0; ; n++ {
		err := l.pin.Out(Level(l.State(), n))
		if err != nil && !failing {
			l.log.Warn("status led write failed", "pin", l.pin.String(), "err", err)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return l.off()
		case <-tick:
		}
	}
}

func (l *LED) off() error {
	if err := l.pin.Out(gpio.Low); err != nil {
		return fmt.Errorf("switch status LED %s off: %w", l.pin, err)
	}
	return nil
}
