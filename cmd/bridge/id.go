package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/tributary-iot/tributary/gateway"
)

func cmdID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("id", stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults)")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	id, err := gateway.LookupIdentity(ctx, cfg, stderr)
	if err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(id)
	}
	id.WriteText(stdout)
	return nil
}
