package led

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLevel(t *testing.T) {
	tests := []struct {
		state State
		want  string // levels over 8 steps, 1 = on
	}{
		{Off, "00000000"},
		{Online, "11111111"},
		{Buffering, "11110000"},
		{Fault, "10101010"},
		{State(42), "10101010"},
	}
	for _, tt := range tests {
		t.Run(tt.state.String(), func(t *testing.T) {
			got := ""
			for n := range 8 {
				if Level(tt.state, n) == gpio.High {
					got += "1"
				} else {
					got += "0"
				}
			}
			if got != tt.want {
				t.Fatalf("pattern %s, want %s", got, tt.want)
			}
		})
	}
}

// recordingPin is a gpiotest.Pin that reports every level written.
type recordingPin struct {
	gpiotest.Pin
	levels chan gpio.Level
}

func (p *recordingPin) Out(l gpio.Level) error {
	if err := p.Pin.Out(l); err != nil {
		return err
	}
	p.levels <- l
	return nil
}

func manualTicks(c chan time.Time) func() (<-chan time.Time, func()) {
	return func() (<-chan time.Time, func()) { return c, func() {} }
}

func TestLEDRun(t *testing.T) {
	pin := &recordingPin{Pin: gpiotest.Pin{N: "GPIO17"}, levels: make(chan gpio.Level, 1)}
	l := New(pin, nil)
	tick := make(chan time.Time)
	l.ticks = manualTicks(tick)
	l.Set(Fault)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	expect := func(want gpio.Level) {
		t.Helper()
		if got := <-pin.levels; got != want {
			t.Fatalf("LED level %v, want %v", got, want)
		}
	}
	expect(gpio.High) // fault, step 0
	tick <- time.Time{}
	expect(gpio.Low) // fault, step 1
	l.Set(Online)
	tick <- time.Time{}
	expect(gpio.High)
	tick <- time.Time{}
	expect(gpio.High)
	cancel()
	expect(gpio.Low) // switched off at shutdown
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestButtonHold(t *testing.T) {
	tests := []struct {
		name      string
		levels    string // pin level per poll, 0 = pressed
		wantHolds int
	}{
		{"released", "1111111111", 0},
		{"short press", "1001001001", 0},
		{"held once", "1000000001", 1},
		{"held long fires once", "1000000000000", 1},
		{"held twice", "100001100001", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pin := &scriptedPin{Pin: gpiotest.Pin{N: "GPIO27"}, script: tt.levels}
			holds := 0
			tick := make(chan time.Time)
			b := &Button{Pin: pin, Hold: 4 * buttonPoll, OnHold: func(context.Context) { holds++ }, ticks: manualTicks(tick)}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- b.Run(ctx) }()
			for range tt.levels {
				tick <- time.Time{}
			}
			tick <- time.Time{}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if holds != tt.wantHolds {
				t.Fatalf("OnHold called %d times, want %d", holds, tt.wantHolds)
			}
			if pin.P != gpio.PullUp {
				t.Errorf("pin pull %v, want PullUp", pin.P)
			}
		})
	}
}

// scriptedPin reads its levels from a script, one per Read (0 = pressed),
// then stays released.
type scriptedPin struct {
	gpiotest.Pin
	script string
	n      int
}

func (p *scriptedPin) Read() gpio.Level {
	p.Lock()
	defer p.Unlock()
	if p.n >= len(p.script) {
		return gpio.High
	}
	p.n++
	return gpio.Level(p.script[p.n-1] == '1')
}
