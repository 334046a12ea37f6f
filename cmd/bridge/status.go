package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/gateway"
	"github.com/tributary-iot/tributary/statuspage"
)

// exitUnhealthy is the exit status of `bridge status` when the gateway
// answers but is not healthy.
const exitUnhealthy = 4

// unhealthyError reports an unhealthy gateway after its status was printed.
type unhealthyError struct{ reason string }

func (e unhealthyError) Error() string { return "the gateway is unhealthy: " + e.reason }
func (unhealthyError) ExitCode() int   { return exitUnhealthy }

// statusFlags are the flags of `bridge status` and `bridge peers`.
type statusFlags struct {
	config, url string
	json        bool
}

// parseStatusFlags reads them; jsonHelp says what --json prints.
func parseStatusFlags(name, jsonHelp string, args []string, stderr io.Writer) (statusFlags, error) {
	var f statusFlags
	fs := newFlags(name, stderr)
	fs.StringVar(&f.config, "config", "", "config file, for http.address (default: embedded defaults)")
	fs.StringVar(&f.url, "url", "", "the gateway's HTTP API, e.g. http://127.0.0.1:7171 (default: from the config)")
	fs.BoolVar(&f.json, "json", false, jsonHelp)
	return f, parseFlags(fs, args)
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseStatusFlags("status", "print the /status document (JSON, docs/status.md) instead of text", args, stderr)
	if err != nil {
		return err
	}
	st, raw, err := fetchStatus(ctx, f.config, f.url)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if f.json {
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		out.WriteByte('\n')
		if _, err := out.WriteTo(stdout); err != nil {
			return err
		}
	} else if err := statuspage.WriteText(stdout, st); err != nil {
		return err
	}
	if !st.Health.OK {
		return unhealthyError{st.Health.Error}
	}
	return nil
}

func cmdPeers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseStatusFlags("peers", "print the nodes as JSON (the /status document's nodes)", args, stderr)
	if err != nil {
		return err
	}
	st, _, err := fetchStatus(ctx, f.config, f.url)
	if err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st.Nodes)
	}
	return statuspage.WritePeers(stdout, st)
}

// fetchStatus reads /status from the gateway at url, or at the config's
// http.address; no gateway answering is said plainly.
func fetchStatus(ctx context.Context, configPath, url string) (statuspage.Status, []byte, error) {
	var apiKey string
	if url == "" || configPath != "" {
		cfg, err := gateway.LoadConfig(configPath)
		if err != nil {
			return statuspage.Status{}, nil, err
		}
		if apiKey, err = cfg.APIKey(); err != nil {
			return statuspage.Status{}, nil, err
		}
		if url == "" {
			if url, err = cfg.HTTPURL(); err != nil {
				return statuspage.Status{}, nil, err
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, raw, err := statuspage.Fetch(ctx, &http.Client{}, url, apiKey)
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return st, nil, fmt.Errorf("no gateway is running at %s (nothing answers: start it with `bridge run`, "+
			"or `systemctl status bridge`; --config or --url names another)", url)
	}
	return st, raw, err
}
