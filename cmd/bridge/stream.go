package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tributary-iot/tributary/gateway"
)

// cmdStream is `bridge stream OP`: rekey replaces a stream's group key on
// the running gateway (issue 18).
func cmdStream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	op := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		op, args = args[0], args[1:]
	}
	fs := newFlags("stream", stderr)
	configPath := fs.String("config", "", "config file of the running gateway (default: embedded defaults)")
	if op != "rekey" {
		if err := parseFlags(fs, args); err != nil {
			return err // --help
		}
		return usageError{errors.New("stream: want `bridge stream rekey [--config FILE] STREAM`")}
	}
	if err := parseArgs(fs, args, 1); err != nil {
		return err
	}
	if op != "rekey" {
		return usageError{errors.New("stream: want `bridge stream rekey [--config FILE] STREAM`")}
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	id, err := gateway.Rekey(ctx, cfg, fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}
