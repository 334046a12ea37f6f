package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/gateway"
	"github.com/tributary-iot/tributary/streamr"
)

const streamUsage = `usage: bridge stream <create|grant|revoke|grant-public|show|rekey> ... [--config FILE] [--key-uri URI]

  create PATH [--description TEXT] [--partitions N]
          create stream <gateway address>PATH in the StreamRegistry
  grant STREAM USER publish|subscribe|edit|delete|grant [--expires TIME]
          give USER (0x address, compressed P-256 key in hex, or "public") a permission;
          --expires (RFC 3339 time or a duration from now) bounds publish and subscribe
  revoke STREAM USER PERMISSION
          take a permission away
  grant-public STREAM publish|subscribe [--expires TIME]
          let everyone publish or subscribe
  show STREAM [--from-block N]
          print the stream's metadata and permissions table
  rekey STREAM
          replace the stream's group key on the running gateway (end-to-end encryption)

Transactions are signed by the gateway key (key.uri) or --key-uri, which
must be a secp256k1 key (file key or PKCS#11 secp256k1); chain ID, nonce and
gas come from [registry] rpc_url.
`

// streamArgs are the positional arguments of each stream subcommand.
var streamArgs = map[string]int{"create": 1, "grant": 3, "revoke": 3, "grant-public": 2, "show": 1}

func cmdStream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, streamUsage)
		return usageError{errors.New("stream: want create, grant, revoke, grant-public, show or rekey")}
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, streamUsage)
		return nil
	}
	if sub == "rekey" {
		return cmdStreamRekey(ctx, args[1:], stdout, stderr)
	}
	nargs, ok := streamArgs[sub]
	if !ok {
		fmt.Fprint(stderr, streamUsage)
		return usageError{fmt.Errorf("stream: unknown subcommand %q", sub)}
	}
	fs := newFlags("stream "+sub, stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults); [registry] rpc_url is needed")
	keyURI := fs.String("key-uri", "", "key URI signing the transactions (default: key.uri, else file://<state_dir>/key)")
	description := fs.String("description", "", "create: the stream's description")
	partitions := fs.Int("partitions", 1, "create: the stream's partition count (1-100)")
	expires := fs.String("expires", "", "grant, grant-public: RFC 3339 time or duration from now after which publish/subscribe lapses")
	fromBlock := fs.Uint64("from-block", 0, "show: first block searched for the stream's permission events")
	pos, err := parseInterleaved(fs, args[1:], nargs)
	if err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *keyURI != "" {
		cfg.Key.URI = *keyURI
	}
	until, err := parseExpires(*expires, time.Now())
	if err != nil {
		return usageError{err}
	}
	m, err := gateway.OpenStreamManager(ctx, cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer m.Close()
	return runStream(ctx, m, sub, pos, streamOptions{*description, *partitions, until, *fromBlock}, stdout)
}

type streamOptions struct {
	description string
	partitions  int
	expires     time.Time
	fromBlock   uint64
}

func runStream(ctx context.Context, m *gateway.StreamManager, sub string, pos []string, o streamOptions, stdout io.Writer) error {
	switch sub {
	case "create":
		id, err := m.Create(ctx, pos[0], o.description, o.partitions)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id)
		return nil
	case "show":
		return m.Show(ctx, pos[0], o.fromBlock, stdout)
	case "grant-public":
		pos = []string{pos[0], gateway.PublicUser, pos[1]}
		sub = "grant"
	}
	p, err := streamr.ParsePermission(pos[2])
	if err != nil {
		return usageError{err}
	}
	if sub == "grant" {
		err = m.Grant(ctx, pos[0], pos[1], p, o.expires)
	} else {
		err = m.Revoke(ctx, pos[0], pos[1], p)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s %s %s: done\n", sub, pos[0], pos[1], p)
	return nil
}

// parseInterleaved parses flags that may stand before, between or after
// exactly n positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpRequest{fs}
			}
			return nil, usageError{fmt.Errorf("%s: %w (see %s --help)", fs.Name(), err, fs.Name())}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != n {
		return nil, usageError{fmt.Errorf("%s: want %d arguments, got %d (see %s --help)", fs.Name(), n, len(pos), fs.Name())}
	}
	return pos, nil
}

// parseExpires reads --expires: empty (none), an RFC 3339 time, a
// duration from now, or Unix seconds.
func parseExpires(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d), nil
	}
	if sec, err := strconv.ParseInt(s, 10, 64); err == nil && sec > 0 {
		return time.Unix(sec, 0), nil
	}
	return time.Time{}, fmt.Errorf("--expires %q: want an RFC 3339 time (2027-01-31T00:00:00Z), a duration from now (720h) or Unix seconds", s)
}

// cmdStreamRekey is `bridge stream rekey STREAM`: it replaces a stream's
// group key on the running gateway (issue 18).
func cmdStreamRekey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stream rekey", stderr)
	configPath := fs.String("config", "", "config file of the running gateway (default: embedded defaults)")
	if err := parseArgs(fs, args, 1); err != nil {
		return err
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
