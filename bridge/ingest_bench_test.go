package bridge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

// BenchmarkIngestPresigned measures what the gateway spends on a QoS 1
// reading between the broker's HandlePublish and its PUBACK, broker
// aside: mapping, the durable enqueue, signing in the group commit and
// the synced Badger commit (real store in a temporary directory, EVM
// key). 10 clients keep up to 64 readings each in flight, as
// scripts/bench-ingest.sh's publishers do; b.N is split across them.
// allocs/op is per reading, Badger's own flushes included.
func BenchmarkIngestPresigned(b *testing.B) {
	key, err := streamr.GenerateEVMKey()
	if err != nil {
		b.Fatal(err)
	}
	g := startTestGateway(b, gatewayOptions{signer: key})
	for g.pipeline.signer.calibrated.Load() == 0 {
		time.Sleep(time.Millisecond) // Run calibrates first
	}
	const clients, inflight = 10, 64
	payload := []byte(fmt.Sprintf(`{"temperature":21.5,"humidity":40,"pad":"%0170d"}`, 0))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range clients {
		n := b.N / clients
		if c < b.N%clients {
			n++
		}
		wg.Go(func() {
			if err := ingestWindow(b.Context(), g.pipeline, fmt.Sprintf("bench-%d", c), fmt.Sprintf("bench/p%d", c), payload, n, inflight); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	if pending, err := g.store.Pending(0, 1); err != nil || len(pending) != 0 {
		b.Fatalf("readings left pending (%d, %v): the benchmark measured the background signer", len(pending), err)
	}
}

// ingestWindow ingests n readings of one client, keeping up to window of
// them waiting for durability, as the broker's ack queue does.
func ingestWindow(ctx context.Context, p *Pipeline, client, topic string, payload []byte, n, window int) error {
	waits := make(chan func(context.Context) error, window)
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for wait := range waits {
			if err := wait(ctx); err != nil {
				errs <- err
				for range waits {
				}
				return
			}
		}
	}()
	for range n {
		wait, reason := p.Ingest(Publish{ClientID: client, Topic: topic, Payload: payload, QoS: 1})
		if reason != nil {
			close(waits)
			return fmt.Errorf("refused: %s", reason.Label)
		}
		waits <- wait
	}
	close(waits)
	return <-errs
}
