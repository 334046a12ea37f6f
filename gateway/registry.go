package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/registry"
	"github.com/tributary-iot/tributary/streamr"
)

// RegistryConfig is the [registry] table: permissions from the on-chain
// StreamRegistry. An empty rpc_url turns it off: the owner and
// [[overlay.publishers]] decide who may publish, as without a chain.
type RegistryConfig struct {
	RPCURL            string   `toml:"rpc_url"`
	Address           string   `toml:"address"`
	CacheTTL          Duration `toml:"cache_ttl"`
	OnUnreachable     string   `toml:"on_unreachable"`      // last-known, deny or allow
	EventPollInterval Duration `toml:"event_poll_interval"` // eth_getLogs for PermissionUpdated*; "0s": off
	CallTimeout       Duration `toml:"call_timeout"`
	MaxCacheEntries   int      `toml:"max_cache_entries"`
	ReceiptTimeout    Duration `toml:"receipt_timeout"` // `bridge stream` waits this long for a transaction's receipt
}

func defaultRegistryConfig() RegistryConfig {
	return RegistryConfig{
		Address:           registry.PolygonStreamRegistry,
		CacheTTL:          Duration(registry.DefaultCacheTTL),
		OnUnreachable:     string(registry.LastKnown),
		EventPollInterval: Duration(registry.DefaultPollInterval),
		CallTimeout:       Duration(registry.DefaultCallTimeout),
		MaxCacheEntries:   registry.DefaultMaxEntries,
		ReceiptTimeout:    Duration(2 * time.Minute),
	}
}

// Enabled reports whether rpc_url is set.
func (r RegistryConfig) Enabled() bool { return r.RPCURL != "" }

func (r RegistryConfig) check() []error {
	var errs []error
	if _, err := registry.ParseAddress(r.Address); err != nil {
		errs = append(errs, fmt.Errorf("registry.address: %w", err))
	}
	if _, err := registry.ParseUnreachable(r.OnUnreachable); err != nil {
		errs = append(errs, fmt.Errorf("registry.%w", err))
	}
	if r.CacheTTL <= 0 || r.CallTimeout <= 0 || r.ReceiptTimeout <= 0 || r.EventPollInterval < 0 {
		errs = append(errs, fmt.Errorf("registry.cache_ttl, call_timeout and receipt_timeout: must be positive; event_poll_interval: must not be negative"))
	}
	if r.MaxCacheEntries <= 0 {
		errs = append(errs, fmt.Errorf("registry.max_cache_entries: must be positive"))
	}
	return errs
}

func (r RegistryConfig) clientConfig(log *slog.Logger, reg prometheus.Registerer) registry.Config {
	mode, _ := registry.ParseUnreachable(r.OnUnreachable) // validated
	poll := time.Duration(r.EventPollInterval)
	if poll == 0 {
		poll = -1
	}
	return registry.Config{
		RPCURL: r.RPCURL, Address: r.Address,
		CacheTTL: time.Duration(r.CacheTTL), OnUnreachable: mode, CallTimeout: time.Duration(r.CallTimeout),
		PollInterval: poll, MaxEntries: r.MaxCacheEntries, Registerer: reg, Logger: log,
	}
}

// dialRegistry returns the StreamRegistry client of [registry]; nil when
// rpc_url is empty.
func (c *Config) dialRegistry(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) (*registry.Client, error) {
	if !c.Registry.Enabled() {
		return nil, nil
	}
	if len(c.Overlay.Publishers) > 0 {
		log.Warn("[registry] is on: the StreamRegistry decides who may publish, [[overlay.publishers]] is not consulted")
	}
	client, err := registry.Dial(ctx, c.Registry.clientConfig(log, reg))
	if err != nil {
		return nil, err
	}
	log.Info("permissions from the StreamRegistry", "address", c.Registry.Address, "cache_ttl", time.Duration(c.Registry.CacheTTL).String(), "on_unreachable", c.Registry.OnUnreachable)
	return client, nil
}

// partitionsFromChain reports whether rule r takes its partition count
// from the stream's metadata: a keyed rule without partitions, on a
// stream named without placeholders, with [registry] on.
func (c *Config) partitionsFromChain(r RuleConfig) bool {
	keyed := r.PartitionKey != "" || r.PartitionKeyField != ""
	return c.Registry.Enabled() && keyed && r.Partitions == 0 && !strings.Contains(r.Stream, "{")
}

// resolvePartitions sets the partition count of the rules that take it
// from the StreamRegistry. A stream the chain cannot describe stops the
// start with the rule named: hashing keys over a guessed count would
// scatter readings over the wrong partitions.
func (c *Config) resolvePartitions(ctx context.Context, client *registry.Client, log *slog.Logger) error {
	for i, r := range c.Rules {
		if client == nil || !c.partitionsFromChain(r) {
			continue
		}
		n, err := client.Partitions(ctx, r.Stream)
		if err != nil {
			return fmt.Errorf("rule %d: partitions not set and the StreamRegistry's metadata of %s cannot give them (set partitions in the rule): %w", i+1, r.Stream, err)
		}
		c.Rules[i].Partitions = n
		log.Info("partition count from the stream's metadata", "rule", i+1, "stream", r.Stream, "partitions", n)
	}
	return nil
}

// registryPolicy is the overlay's publisher policy with [registry] on:
// Publish, direct or public, at the message's time.
type registryPolicy struct{ client *registry.Client }

// MayPublish judges a publisher now (the overlay prefers MayPublishAt).
func (p registryPolicy) MayPublish(stream streamr.StreamID, publisher []byte) bool {
	ok, _ := p.MayPublishAt(context.Background(), stream, publisher, time.Now())
	return ok
}

// MayPublishAt implements overlay.TimedPolicy.
func (p registryPolicy) MayPublishAt(ctx context.Context, stream streamr.StreamID, publisher []byte, at time.Time) (bool, error) {
	return p.client.Allowed(ctx, string(stream), publisher, streamr.PermissionPublish, at)
}
