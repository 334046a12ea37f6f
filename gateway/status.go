package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tributary-iot/tributary/hw"
	"github.com/tributary-iot/tributary/hw/led"
)

// StatusConfig is the [status] table: an optional LED and button on GPIO.
type StatusConfig struct {
	LEDPin     string   `toml:"led_pin"`     // e.g. "GPIO17"; "" = no LED
	ButtonPin  string   `toml:"button_pin"`  // e.g. "GPIO27"; "" = no button
	ButtonHold Duration `toml:"button_hold"` // how long a press must last
}

// runStatus drives the LED from the gateway's state and acts on a held
// button: it wakes the signer and forwarder (flush) and logs the status.
func (s *system) runStatus(ctx context.Context) error {
	cfg := s.cfg.Status
	var runs []func(context.Context) error
	if cfg.LEDPin != "" {
		pin, err := led.OpenPin(cfg.LEDPin)
		if err != nil {
			return fmt.Errorf("status.led_pin: %w", err)
		}
		l := led.New(pin, s.log)
		runs = append(runs, l.Run, func(ctx context.Context) error { return s.updateLED(ctx, l) })
	}
	if cfg.ButtonPin != "" {
		pin, err := led.OpenPin(cfg.ButtonPin)
		if err != nil {
			return fmt.Errorf("status.button_pin: %w", err)
		}
		b := &led.Button{Pin: pin, Hold: time.Duration(cfg.ButtonHold), OnHold: s.flushAndReport, Logger: s.log}
		runs = append(runs, b.Run)
	}
	errs := make(chan error, len(runs))
	for _, run := range runs {
		go func() { errs <- run(ctx) }()
	}
	var err error
	for range runs {
		err = errors.Join(err, <-errs)
	}
	return err
}

// updateLED shows fault while the pipeline is unhealthy, buffering while
// messages wait for peers, online otherwise.
func (s *system) updateLED(ctx context.Context, l *led.LED) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		l.Set(s.ledState())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *system) ledState() led.State {
	switch {
	case s.pipeline.Health(maxStall) != nil:
		return led.Fault
	case s.forwarder != nil && s.forwarder.HoldingBack():
		return led.Buffering
	}
	return led.Online
}

// flushAndReport is the button's action.
func (s *system) flushAndReport(context.Context) {
	s.notifyForwarder()
	s.pipeline.Wake()
	attrs := []any{"led", s.ledState().String(), "publisher", hw.Describe(s.key)}
	if s.node != nil {
		attrs = append(attrs, "peers", s.node.ConnectedPeers())
	}
	s.log.Info("status (button)", attrs...)
}
