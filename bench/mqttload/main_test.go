package main

import (
	"testing"
	"time"
)

func TestTimelineSummarize(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	var tl timeline
	// Second 0: a slow start; second 1: steady; PUBACK samples must not count.
	for i := range 100 {
		tl.add(sample{sent: ms(float64(i) * 5), lat: ms(50)})
		tl.add(sample{sent: ms(1000 + float64(i)*5), lat: ms(2)})
		tl.add(sample{sent: ms(1000 + float64(i)*5), lat: ms(900), ack: true})
	}
	var res Result
	tl.summarize(&res, time.Second)
	tests := []struct {
		name      string
		got, want float64
	}{
		{"whole-run p99", res.E2EP99Ms, 50},
		{"whole-run p50 (half the readings are slow)", res.E2EP50Ms, 2},
		{"whole-run max", res.E2EMaxMs, 50},
		{"steady-state p99 leaves the first second out", res.E2ESteadyP99Ms, 2},
		{"steady-state p50", res.E2ESteadyP50Ms, 2},
		{"second 0 p99", res.E2ESeconds[0].P99Ms, 50},
		{"second 1 p99", res.E2ESeconds[1].P99Ms, 2},
		{"second 1 readings", float64(res.E2ESeconds[1].N), 100},
	}
	if len(res.E2ESeconds) != 2 {
		t.Fatalf("got %d seconds, want 2: %+v", len(res.E2ESeconds), res.E2ESeconds)
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
