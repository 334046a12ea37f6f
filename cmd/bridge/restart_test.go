package main

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// rejoinBound is how soon after a restarted gateway is up again it must be
// back in the partition's mesh and receiving (issue 11).
const rejoinBound = 5 * time.Second

// TestRestartedPeerRejoins stops the subscribing bridge B with SIGTERM
// and, in a second round, SIGKILL, and starts it again a second later,
// while a sensor publishes on A: B must be back in the mesh and receiving
// new readings within rejoinBound of coming up, and both bridges' peer and
// neighbour gauges must say so. At the end B holds every reading exactly
// once, in order.
func TestRestartedPeerRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test with real bridges")
	}
	p := startFaultPair(t)
	defer p.a.stop()
	part := p.stream + "#0"
	pub := startPublisher(t, p.a.mqtt, 50, 0)
	c := newConsumer()
	first := c.attach(t, p.b, "consumer")
	waitReceiving(t, c, 10*time.Second)
	first.Disconnect(0)
	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		if how == "SIGTERM" {
			p.b.stop()
		} else {
			p.b.kill()
		}
		time.Sleep(time.Second)
		p.b.start()
		up := time.Now()
		client := c.attach(t, p.b, "consumer")
		waitReceiving(t, c, rejoinBound)
		t.Logf("after %s and restart: receiving again %s after B was up", how, time.Since(up).Round(time.Millisecond))
		for _, in := range []*instance{p.a, p.b} {
			checkPartitionGauges(t, in, part)
		}
		client.Disconnect(0)
	}
	defer p.b.stop()
	acked := pub.finish()
	p.checkStored(t, acked)
}

// waitReceiving waits until the consumer gets a reading it did not have.
func waitReceiving(t *testing.T, c *consumer, within time.Duration) {
	t.Helper()
	before, _ := c.snapshot()
	deadline := time.Now().Add(within)
	for {
		got, _ := c.snapshot()
		if len(got) > len(before) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new reading within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkPartitionGauges expects one peer, in the mesh, in a two-bridge
// overlay that is carrying readings.
func checkPartitionGauges(t *testing.T, in *instance, part string) {
	t.Helper()
	time.Sleep(1100 * time.Millisecond) // the gauges are refreshed every second
	for _, name := range []string{"tributary_overlay_peers", "tributary_overlay_neighbours"} {
		metric := fmt.Sprintf("%s{stream_part=%q}", name, part)
		v, err := in.metric(context.Background(), metric)
		if err != nil || v != 1 {
			t.Errorf("%s = %v (%v), want 1 while readings flow", metric, v, err)
		}
	}
}
