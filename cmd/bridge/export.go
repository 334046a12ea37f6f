package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/streamr"
)

func cmdExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults)")
	streamFlag := fs.String("stream", "", "stream ID (required)")
	partition := fs.Int("partition", 0, "stream partition")
	from := fs.String("from", "", "first timestamp, ms since the epoch or RFC 3339 (default: the beginning)")
	to := fs.String("to", "", "last timestamp, ms since the epoch or RFC 3339 (default: the end)")
	outPath := fs.String("o", "", "output file (default: standard output)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	q, err := exportQuery(*streamFlag, *partition, *from, *to)
	if err != nil {
		return usageError{fmt.Errorf("export: %w", err)}
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	out, finish, err := openOutput(*outPath, stdout)
	if err != nil {
		return err
	}
	err = export(ctx, cfg, q, out)
	return errors.Join(err, finish(err == nil))
}

func exportQuery(stream string, partition int, from, to string) (bridge.ResendQuery, error) {
	if stream == "" {
		return bridge.ResendQuery{}, errors.New("--stream is required")
	}
	id, err := streamr.ParseStreamID(stream)
	if err != nil {
		return bridge.ResendQuery{}, err
	}
	part, err := streamr.NewStreamPartID(id, partition)
	if err != nil {
		return bridge.ResendQuery{}, err
	}
	q := bridge.ResendQuery{Part: part, To: streamr.MessageRef{Timestamp: math.MaxInt64, SequenceNumber: math.MaxInt32}}
	if q.From.Timestamp, err = bridge.ParseTime(from); err != nil {
		return q, fmt.Errorf("--from: %w", err)
	}
	if to != "" {
		if q.To.Timestamp, err = bridge.ParseTime(to); err != nil {
			return q, fmt.Errorf("--to: %w", err)
		}
	}
	return q, nil
}

// export asks a running bridge over its HTTP API, or, when none answers,
// reads the store directly (Badger allows one process at a time).
func export(ctx context.Context, cfg *Config, q bridge.ResendQuery, out io.Writer) error {
	if cfg.HTTP.Address != "" {
		err := exportHTTP(ctx, cfg.HTTP.Address, q, out)
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			return err // served, or failed after connecting
		}
	}
	store, err := storage.Open(storage.Options{Dir: storageDir(cfg), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("open storage (is a bridge running without http.address?): %w", err)
	}
	defer store.Close()
	w := streamr.NewRawWriter(out)
	return bridge.WriteResend(store, q, w)
}

func exportHTTP(ctx context.Context, address string, q bridge.ResendQuery, out io.Writer) error {
	v := url.Values{}
	v.Set("format", "raw")
	v.Set("fromTimestamp", strconv.FormatInt(q.From.Timestamp, 10))
	v.Set("fromSequenceNumber", "0")
	v.Set("toTimestamp", strconv.FormatInt(q.To.Timestamp, 10))
	u := fmt.Sprintf("http://%s/streams/%s/data/partitions/%d/range?%s",
		address, url.PathEscape(string(q.Part.Stream)), q.Part.Partition, v.Encode())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			return opErr
		}
		return fmt.Errorf("export from bridge at %s: %w", address, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("export from bridge at %s: %s: %s", address, resp.Status, msg)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("export from bridge at %s: %w", address, err)
	}
	return nil
}

// openOutput returns a buffered writer to path (or stdout) and a function
// that flushes and closes it; on failure a partial file is removed.
func openOutput(path string, stdout io.Writer) (io.Writer, func(ok bool) error, error) {
	if path == "" {
		bw := bufio.NewWriter(stdout)
		return bw, func(bool) error { return bw.Flush() }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	bw := bufio.NewWriter(f)
	finish := func(ok bool) error {
		err := errors.Join(bw.Flush(), f.Close())
		if !ok || err != nil {
			_ = os.Remove(path)
		}
		return err
	}
	return bw, finish, nil
}
