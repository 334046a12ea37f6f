package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	ethereum "github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/tributary-iot/tributary/streamr"
)

// Backend is the JSON-RPC surface the client uses; *ethclient.Client and
// go-ethereum's simulated backend satisfy it.
type Backend interface {
	ethereum.ContractCaller
	ethereum.LogFilterer
	ethereum.BlockNumberReader
	ethereum.ChainIDReader
	ethereum.GasEstimator
	ethereum.GasPricer1559
	ethereum.PendingStateReader
	ethereum.TransactionSender
	ethereum.TransactionReader
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	BalanceAt(ctx context.Context, account common.Address, blockNumber *big.Int) (*big.Int, error)
}

// Unreachable is what Allowed answers when the chain cannot be asked.
type Unreachable string

// The on_unreachable modes.
const (
	LastKnown Unreachable = "last-known" // the last answer the chain gave, however old; deny if there is none
	Deny      Unreachable = "deny"
	Allow     Unreachable = "allow"
)

// ParseUnreachable reads an on_unreachable value.
func ParseUnreachable(s string) (Unreachable, error) {
	switch u := Unreachable(s); u {
	case LastKnown, Deny, Allow:
		return u, nil
	}
	return "", fmt.Errorf("on_unreachable %q: want last-known, deny or allow", s)
}

// PolygonStreamRegistry is the StreamRegistry the Streamr Network uses.
const PolygonStreamRegistry = "0x0D483E10612F327FC11965Fc82E90dC19b141641"

// Config configures a Client; zero values take the defaults.
type Config struct {
	RPCURL        string        // for Dial
	Address       string        // the StreamRegistry contract, 0x-prefixed hex
	CacheTTL      time.Duration // how long an answer is used without asking again
	OnUnreachable Unreachable
	CallTimeout   time.Duration // one eth_call
	PollInterval  time.Duration // eth_getLogs for PermissionUpdated*; negative: no polling
	MaxEntries    int           // cached (stream, user) answers; the oldest half goes when full
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
	Now           func() time.Time // nil: time.Now
}

// Defaults of Config.
const (
	DefaultCacheTTL     = 5 * time.Minute
	DefaultCallTimeout  = 5 * time.Second
	DefaultPollInterval = 5 * time.Second
	DefaultMaxEntries   = 100_000
)

func (c Config) withDefaults() Config {
	if c.CacheTTL <= 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.OnUnreachable == "" {
		c.OnUnreachable = LastKnown
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Errors of the client. Transaction errors are in tx.go.
var (
	// ErrUnreachable wraps a failure to ask the chain.
	ErrUnreachable = errors.New("StreamRegistry unreachable")
	// ErrStreamNotFound is the contract's error_streamDoesNotExist.
	ErrStreamNotFound = errors.New("stream does not exist in the StreamRegistry")
)

// Client reads permissions from a StreamRegistry. It is safe for
// concurrent use.
type Client struct {
	cfg      Config
	contract common.Address
	backend  Backend
	abi      abi.ABI
	log      *slog.Logger
	flight   singleflight.Group
	metrics  *metrics

	closer func() // the RPC connection Dial made; nil for New

	mu      sync.Mutex
	entries map[cacheKey]*entry
	gen     uint64 // bumped by every invalidation: a look-up that began before one stores its answer as stale
	logged  map[string]time.Time
}

type cacheKey struct{ stream, user string }

// entry is one cached answer.
type entry struct {
	perms   Permissions
	missing bool      // the stream does not exist (negative entry)
	fetched time.Time // zero: stale, ask again (kept for last-known)
}

// Dial connects to cfg.RPCURL (http(s):// or ws(s)://).
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	rc, err := ethclient.DialContext(ctx, cfg.RPCURL)
	if err != nil {
		return nil, fmt.Errorf("registry rpc_url %q: %w", cfg.RPCURL, err)
	}
	c, err := New(rc, cfg)
	if err != nil {
		rc.Close()
		return nil, err
	}
	c.closer = rc.Close
	return c, nil
}

// Close closes the RPC connection Dial made.
func (c *Client) Close() {
	if c.closer != nil {
		c.closer()
	}
}

// New returns a client of the contract at cfg.Address over backend.
func New(backend Backend, cfg Config) (*Client, error) {
	a, err := parseABI()
	if err != nil {
		return nil, err
	}
	contract, err := ParseAddress(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("StreamRegistry address: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Client{
		cfg: cfg, contract: contract, backend: backend, abi: a, log: cfg.Logger.With("component", "registry"),
		entries: make(map[cacheKey]*entry), logged: make(map[string]time.Time),
		metrics: newMetrics(),
	}
	if cfg.Registerer != nil {
		if err := c.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("registry metrics: %w", err)
		}
	}
	return c, nil
}

// ParseAddress reads a 0x-prefixed 20-byte hex address.
func ParseAddress(s string) (common.Address, error) {
	if !common.IsHexAddress(s) || !strings.HasPrefix(s, "0x") {
		return common.Address{}, fmt.Errorf("%q is not a 0x-prefixed 20-byte hex address", s)
	}
	return common.HexToAddress(s), nil
}

// Mode is the client's on_unreachable mode.
func (c *Client) Mode() Unreachable { return c.cfg.OnUnreachable }

// Allowed reports whether user (a 20-byte address or a 33-byte P-256
// key) holds p on streamID at time at, directly or publicly. When the
// chain cannot be asked, OnUnreachable decides: Allow answers true,
// LastKnown the last answer the chain gave; Deny, and LastKnown without
// one, answer false with an error wrapping ErrUnreachable — so a non-nil
// error always comes with false, and means "refused for want of the chain".
func (c *Client) Allowed(ctx context.Context, streamID string, user []byte, p streamr.Permission, at time.Time) (bool, error) {
	e, err := c.lookup(ctx, streamID, user)
	if err == nil {
		return !e.missing && e.perms.Has(p, at), nil
	}
	switch {
	case c.cfg.OnUnreachable == Allow:
		c.metrics.unreachable.WithLabelValues("allowed").Inc()
		c.warnOnce("unreachable", "StreamRegistry unreachable: allowing (on_unreachable = allow)", err)
		return true, nil
	case c.cfg.OnUnreachable == LastKnown && e != nil:
		c.metrics.unreachable.WithLabelValues("last_known").Inc()
		c.warnOnce("unreachable", "StreamRegistry unreachable: using the last answers it gave (on_unreachable = last-known)", err)
		return !e.missing && e.perms.Has(p, at), nil
	}
	c.metrics.unreachable.WithLabelValues("denied").Inc()
	c.warnOnce("unreachable", "StreamRegistry unreachable: refusing (on_unreachable = "+string(c.cfg.OnUnreachable)+")", err)
	return false, err
}

// Permissions returns user's permissions on streamID, from the cache
// while fresh; ErrStreamNotFound if the stream does not exist.
func (c *Client) Permissions(ctx context.Context, streamID string, user []byte) (Permissions, error) {
	e, err := c.lookup(ctx, streamID, user)
	if err != nil {
		return Permissions{}, err
	}
	if e.missing {
		return Permissions{}, fmt.Errorf("%s: %w", streamID, ErrStreamNotFound)
	}
	return e.perms, nil
}

// lookup returns the fresh entry of (stream, user), asking the chain if
// there is none. On failure it returns the stale entry, if any, with an
// error wrapping ErrUnreachable.
func (c *Client) lookup(ctx context.Context, stream string, user []byte) (*entry, error) {
	key := cacheKey{stream, string(user)}
	now := c.cfg.Now()
	c.mu.Lock()
	e := c.entries[key]
	gen := c.gen
	c.mu.Unlock()
	if e != nil && !e.fetched.IsZero() && now.Sub(e.fetched) < c.cfg.CacheTTL {
		c.metrics.lookups.WithLabelValues("hit").Inc()
		return e, nil
	}
	v, err, _ := c.flight.Do(stream+"\x00"+string(user), func() (any, error) {
		return c.fetch(ctx, key, gen)
	})
	if err != nil {
		c.metrics.lookups.WithLabelValues("error").Inc()
		return e, err
	}
	c.metrics.lookups.WithLabelValues("miss").Inc()
	return v.(*entry), nil
}

// fetch asks the chain and caches the answer. gen is the invalidation
// generation the look-up began in.
func (c *Client) fetch(ctx context.Context, key cacheKey, gen uint64) (*entry, error) {
	perms, err := c.callPermissions(ctx, key.stream, []byte(key.user))
	e := &entry{perms: perms, fetched: c.cfg.Now()}
	switch {
	case errors.Is(err, ErrStreamNotFound):
		e.missing = true
	case err != nil:
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		stored := *e
		stored.fetched = time.Time{} // an event may have changed it meanwhile
		e = &stored
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.cfg.MaxEntries {
		c.evictLocked()
	}
	c.entries[key] = e
	c.metrics.entries.Set(float64(len(c.entries)))
	return e, nil
}

// evictLocked drops the older half of the entries (by fetch time).
func (c *Client) evictLocked() {
	var total time.Duration
	now := c.cfg.Now()
	for _, e := range c.entries {
		total += now.Sub(e.fetched)
	}
	avg := total / time.Duration(len(c.entries))
	for k, e := range c.entries {
		if now.Sub(e.fetched) >= avg {
			delete(c.entries, k)
		}
	}
	c.metrics.evictions.Inc()
	c.warnOnce("evict", "registry cache full: dropped its older half (raise [registry] max_cache_entries)", nil)
}

// callPermissions is getPermissionsForUserId(stream, user).
func (c *Client) callPermissions(ctx context.Context, stream string, user []byte) (Permissions, error) {
	out, err := c.call(ctx, "getPermissionsForUserId", stream, user)
	if err != nil {
		return Permissions{}, err
	}
	vals, err := c.abi.Unpack("getPermissionsForUserId", out)
	if err != nil || len(vals) != 1 {
		return Permissions{}, fmt.Errorf("decode getPermissionsForUserId answer: %w", err)
	}
	p, ok := abi.ConvertType(vals[0], new(onChainPermission)).(*onChainPermission)
	if !ok {
		return Permissions{}, fmt.Errorf("decode getPermissionsForUserId answer: unexpected %T", vals[0])
	}
	return fromChain(*p), nil
}

// Exists is the contract's exists(stream).
func (c *Client) Exists(ctx context.Context, stream string) (bool, error) {
	var ok bool
	err := c.callInto(ctx, &ok, "exists", stream)
	return ok, err
}

// HasPermission is the contract's hasPermission(stream, address, p):
// direct or public, judged on-chain at the latest block.
func (c *Client) HasPermission(ctx context.Context, stream string, user common.Address, p streamr.Permission) (bool, error) {
	var ok bool
	err := c.callInto(ctx, &ok, "hasPermission", stream, user, uint8(p))
	return ok, err
}

// Metadata is the contract's getStreamMetadata(stream), a JSON text.
func (c *Client) Metadata(ctx context.Context, stream string) (string, error) {
	var s string
	err := c.callInto(ctx, &s, "getStreamMetadata", stream)
	return s, err
}

func (c *Client) callInto(ctx context.Context, out any, method string, args ...any) error {
	data, err := c.call(ctx, method, args...)
	if err != nil {
		return err
	}
	vals, err := c.abi.Unpack(method, data)
	if err != nil || len(vals) != 1 {
		return fmt.Errorf("decode %s answer: %w", method, err)
	}
	return setOut(out, vals[0], method)
}

func setOut(out, v any, method string) error {
	switch o := out.(type) {
	case *bool:
		b, ok := v.(bool)
		*o = b
		if ok {
			return nil
		}
	case *string:
		s, ok := v.(string)
		*o = s
		if ok {
			return nil
		}
	}
	return fmt.Errorf("decode %s answer: unexpected %T", method, v)
}

// call runs an eth_call of method at the latest block. A revert with
// error_streamDoesNotExist is ErrStreamNotFound; other failures wrap
// ErrUnreachable (a revert is not one, it is the chain's answer).
func (c *Client) call(ctx context.Context, method string, args ...any) ([]byte, error) {
	data, err := c.abi.Pack(method, args...)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	to := c.contract
	out, err := c.backend.CallContract(ctx, ethereum.CallMsg{To: &to, Data: data}, nil)
	if err == nil {
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: %s: no contract code at %s", ErrUnreachable, method, to.Hex())
		}
		return out, nil
	}
	if reason, ok := revertReason(err); ok {
		if reason == "error_streamDoesNotExist" {
			return nil, ErrStreamNotFound
		}
		return nil, fmt.Errorf("%s reverted: %s", method, reason)
	}
	return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, method, err)
}

// revertReason decodes the reason of a reverted call, as geth reports it
// (JSON-RPC error 3 with the revert data).
func revertReason(err error) (string, bool) {
	data, ok := ethclient.RevertErrorData(err)
	if !ok {
		return "", false
	}
	reason, uerr := abi.UnpackRevert(data)
	if uerr != nil {
		return fmt.Sprintf("0x%x", data), true
	}
	return reason, true
}

// Invalidate drops the cached answers of user on stream (all users' if
// user is nil or the zero address: a public permission changed).
func (c *Client) Invalidate(stream string, user []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	public := len(user) == 0 || (len(user) == common.AddressLength && common.BytesToAddress(user) == (common.Address{}))
	for k, e := range c.entries {
		if k.stream == stream && (public || k.user == string(user)) {
			e2 := *e
			e2.fetched = time.Time{}
			c.entries[k] = &e2
		}
	}
	c.metrics.invalidations.Inc()
}

// warnOnce logs msg at most once a minute per kind.
func (c *Client) warnOnce(kind, msg string, err error) {
	now := c.cfg.Now()
	c.mu.Lock()
	last, seen := c.logged[kind]
	if seen && now.Sub(last) < time.Minute {
		c.mu.Unlock()
		return
	}
	c.logged[kind] = now
	c.mu.Unlock()
	if err != nil {
		c.log.Warn(msg, "err", err)
	} else {
		c.log.Warn(msg)
	}
}

// Partitions is the stream's partition count from its metadata
// ({"partitions": N}; 1 when absent, as the Streamr SDK reads it).
func (c *Client) Partitions(ctx context.Context, stream string) (int, error) {
	text, err := c.Metadata(ctx, stream)
	if err != nil {
		return 0, err
	}
	var meta struct {
		Partitions *int `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(text), &meta); err != nil {
		return 0, fmt.Errorf("metadata of %s is not JSON: %w", stream, err)
	}
	if meta.Partitions == nil {
		return 1, nil
	}
	if n := *meta.Partitions; n >= 1 && n <= streamr.MaxPartitions {
		return n, nil
	}
	return 0, fmt.Errorf("metadata of %s: partitions %d is not 1 to %d", stream, *meta.Partitions, streamr.MaxPartitions)
}
