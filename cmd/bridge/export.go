package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/tributary-iot/tributary/gateway"
)

func cmdExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults)")
	streamFlag := fs.String("stream", "", "stream ID (required)")
	partition := fs.Int("partition", 0, "stream partition")
	from := fs.String("from", "", "first timestamp, ms since the epoch or RFC 3339 (default: the beginning)")
	to := fs.String("to", "", "last timestamp, ms since the epoch or RFC 3339 (default: the end)")
	outPath := fs.String("o", "", "output file (default: standard output)")
	decrypt := fs.Bool("decrypt", false, "decrypt AES content with the group keys stored here (the gateway must be stopped; decrypted messages no longer verify)")
	progress := fs.Bool("progress", false, "report progress on stderr (default: when stderr is a terminal)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	q, err := gateway.ExportQuery(*streamFlag, *partition, *from, *to)
	if err != nil {
		return usageError{fmt.Errorf("export: %w", err)}
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	var progressTo io.Writer
	if *progress || isTerminal(stderr) {
		progressTo = stderr
	}
	if *decrypt {
		return gateway.ExportDecryptedFile(ctx, cfg, q, *outPath, stdout, stderr, progressTo)
	}
	return gateway.ExportFile(ctx, cfg, q, *outPath, stdout, stderr, progressTo)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
