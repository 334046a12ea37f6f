package gateway

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/tributary-iot/tributary/hw"
)

// ManageKey is `bridge key OP`: it creates (new), opens (show), imports
// (a hex private key read from in) or provisions (provision-ecc, after
// the operator types YES on in) the key of cfg's [key] table, logging and
// prompting on prompt. The caller closes the key.
func ManageKey(ctx context.Context, cfg *Config, op string, in io.Reader, prompt io.Writer) (hw.Key, error) {
	uri := cfg.KeyURI()
	opts := cfg.KeyOptions(slog.New(slog.NewTextHandler(prompt, nil)))
	lines := bufio.NewReader(in)
	var key hw.Key
	var err error
	switch op {
	case "new":
		key, err = hw.Create(ctx, uri, opts)
	case "show":
		key, err = hw.Open(ctx, uri, opts)
	case "import":
		var priv []byte
		if priv, err = readHexKey(lines); err == nil {
			key, err = hw.Import(ctx, uri, priv, opts)
		}
	case "provision-ecc":
		key, err = hw.ProvisionECC(ctx, uri, opts, confirmProvision(lines, prompt))
	default:
		err = fmt.Errorf("unknown operation %q", op)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s %s: %w", op, uri, err)
	}
	return key, nil
}

// confirmProvision asks the operator to type YES before the chip is locked.
func confirmProvision(in *bufio.Reader, out io.Writer) func(chip string) error {
	return func(chip string) error {
		fmt.Fprintf(out, "About to configure and permanently lock %s.\nThis cannot be undone. Type YES to continue: ", chip)
		answer, err := in.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read confirmation: %w", err)
		}
		if strings.TrimSpace(answer) != "YES" {
			return errors.New("not confirmed: the chip was not changed")
		}
		return nil
	}
}

func readHexKey(in *bufio.Reader) ([]byte, error) {
	line, err := in.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read key from stdin: %w", err)
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(line), "0x"))
	if err != nil || len(b) != 32 {
		return nil, errors.New("stdin: want a 32-byte private key as 64 hex digits")
	}
	return b, nil
}
