// Command fsyncprobe measures what a synced commit must wait for on this
// disk: it appends small records to a file in -dir and fsyncs after each,
// paced like a lightly loaded group committer, and reports the latency
// percentiles as one JSON object. The overlay benchmark takes it as the
// physical floor of end-to-end latency (a reading is forwarded only once
// it is durable).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"
)

// Result is what one run measured.
type Result struct {
	Syncs int     `json:"syncs"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the disk to measure")
	duration := flag.Duration("duration", 5*time.Second, "measuring time")
	interval := flag.Duration("interval", time.Millisecond, "pause between synced appends")
	size := flag.Int("size", 512, "bytes appended per sync")
	flag.Parse()
	res, err := probe(*dir, *duration, *interval, *size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsyncprobe:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

func probe(dir string, duration, interval time.Duration, size int) (*Result, error) {
	f, err := os.CreateTemp(dir, "fsyncprobe-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	record := make([]byte, size)
	var lat []time.Duration
	for end := time.Now().Add(duration); time.Now().Before(end); time.Sleep(interval) {
		start := time.Now()
		if _, err := f.Write(record); err != nil {
			return nil, fmt.Errorf("append to %s: %w", f.Name(), err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("sync %s: %w", f.Name(), err)
		}
		lat = append(lat, time.Since(start))
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("no sync completed in %s", duration)
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	return &Result{Syncs: len(lat), P50Ms: ms(0.5), P99Ms: ms(0.99), MaxMs: ms(1)}, nil
}
