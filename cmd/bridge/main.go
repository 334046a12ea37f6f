// Command bridge is the Tributary gateway: an embedded MQTT broker whose
// readings are stored durably, signed as Streamr messages with the
// gateway's identity, and forwarded to the Streamr overlay.
//
// Usage:
//
//	bridge run [--config FILE] [--bootstrap-node]
//	bridge check-config FILE
//	bridge key new|show|import|provision-ecc [--config FILE] [--uri URI]
//	bridge id [--config FILE] [--json]
//	bridge export --stream ID [--partition N] [--from TS] [--to TS] [--decrypt] [-o FILE] [--progress] [--config FILE]
//	bridge stream create|grant|revoke|grant-public|show ... [--config FILE] [--key-uri URI]
//	bridge status [--config FILE] [--url URL] [--json]
//	bridge peers [--config FILE] [--url URL] [--json]
//	bridge passwd
//	bridge config-example
//	bridge version
//	bridge help [COMMAND]
//
// Every command answers --help with its usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tributary-iot/tributary/gateway"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal ends the process at once, drain or not
	err := runCommand(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.As(err, new(loggedError)) {
			fmt.Fprintln(os.Stderr, "bridge:", err)
		}
		os.Exit(exitCode(err))
	}
}

// loggedError is an error the gateway's log already holds; main exits
// non-zero without printing it again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// addrsAsText logs network addresses as host:port text (JSON would
// otherwise print the structs' fields).
func addrsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	switch v := a.Value.Any().(type) {
	case net.Addr:
		return slog.String(a.Key, v.String())
	case []net.Addr:
		s := make([]string, len(v))
		for i, addr := range v {
			s[i] = addr.String()
		}
		return slog.Any(a.Key, s)
	}
	return a
}

// usageError marks errors in how the command was called (exit status 2).
type usageError struct{ error }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	var coded interface{ ExitCode() int } // e.g. unsignedError: 3
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	return 1
}

// command is one subcommand, as `bridge help` lists it.
type command struct {
	name     string
	synopsis string // the usage line
	summary  string // one line for the list of commands
}

// commands is every subcommand; `bridge help` and each --help print from it.
var commands = []command{
	{"run", "bridge run [--config FILE] [--bootstrap-node]", "run the gateway (default config: embedded defaults)"},
	{"check-config", "bridge check-config FILE", "validate a config file exactly as run does, without starting"},
	{"key", "bridge key new|show|import|provision-ecc [--config FILE] [--uri URI]", "manage the gateway identity: new, show, import, provision-ecc"},
	{"id", "bridge id [--config FILE] [--json]", "print the publisher ID, key type, overlay peer ID and dialable addresses"},
	{"export", "bridge export --stream ID [--partition N] [--from TS] [--to TS] [--decrypt] [-o FILE] [--progress] [--config FILE]", "write stored messages of a stream in Streamr raw format"},
	{"stream", "bridge stream create|grant|revoke|grant-public|show|rekey ... [--config FILE] [--key-uri URI]", "manage streams and permissions in the StreamRegistry ([registry] rpc_url); rekey: replace a stream's group key on the running gateway"},
	{"status", "bridge status [--config FILE] [--url URL] [--json]", "show the running gateway's health, identity, backlog and stream partitions (exit 4: unhealthy)"},
	{"peers", "bridge peers [--config FILE] [--url URL] [--json]", "list the overlay peers and DHT providers the running gateway knows"},
	{"passwd", "bridge passwd", "read a password (prompted without echo on a terminal, else a line of stdin), print its bcrypt hash for users_file"},
	{"config-example", "bridge config-example", "print a config file documenting every key"},
	{"version", "bridge version", "print the version"},
	{"help", "bridge help [COMMAND]", "print this list, or the usage of COMMAND"},
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: bridge <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-15s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n`bridge COMMAND --help` prints the usage of a command.\n")
}

// runCommand dispatches a subcommand; main is only process plumbing. A
// --help anywhere a flag may stand prints that command's usage on stdout.
func runCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdin, stdout, stderr)
	var help helpRequest
	if errors.As(err, &help) {
		printHelp(stdout, help.fs)
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return usageError{errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stderr)
	case "check-config":
		return cmdCheckConfig(rest, stdout, stderr)
	case "key":
		return cmdKey(ctx, rest, stdin, stdout, stderr)
	case "id":
		return cmdID(ctx, rest, stdout, stderr)
	case "export":
		return cmdExport(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "peers":
		return cmdPeers(ctx, rest, stdout, stderr)
	case "stream":
		return cmdStream(ctx, rest, stdout, stderr)
	case "passwd":
		return cmdPasswd(rest, stdin, stdout, stderr)
	case "config-example":
		if err := parseFlags(newFlags("config-example", stderr), rest); err != nil {
			return err
		}
		_, err := stdout.Write(gateway.ExampleConfig())
		return err
	case "version":
		if err := parseFlags(newFlags("version", stderr), rest); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "bridge", version)
		return nil
	case "help", "-h", "-help", "--help":
		return cmdHelp(rest, stdout, stderr)
	}
	usage(stderr)
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}

func cmdHelp(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || strings.HasPrefix(args[0], "-") {
		usage(stdout)
		return nil
	}
	switch args[0] {
	case "key":
		fmt.Fprint(stdout, keyUsage)
		return nil
	case "stream":
		fmt.Fprint(stdout, streamUsage)
		return nil
	}
	// Every command answers --help with its own usage.
	err := dispatch(context.Background(), []string{args[0], "--help"}, strings.NewReader(""), stdout, stderr)
	var help helpRequest
	if errors.As(err, &help) {
		printHelp(stdout, help.fs)
		return nil
	}
	return err
}

// helpRequest is returned by parseFlags for -h, -help or --help.
type helpRequest struct{ fs *flag.FlagSet }

func (helpRequest) Error() string { return "help requested" }

// printHelp prints a command's usage line, summary and flags.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	name := strings.TrimPrefix(fs.Name(), "bridge ")
	synopsis, summary := "bridge "+name+" [flags]", ""
	for _, c := range commands {
		if c.name == name {
			synopsis, summary = c.synopsis, c.summary
		}
	}
	if sub, ok := strings.CutPrefix(name, "key "); ok {
		synopsis, summary = "bridge key "+sub+" [--config FILE] [--uri URI]", keySummary(sub)
	}
	fmt.Fprintf(w, "usage: %s\n", synopsis)
	if summary != "" {
		fmt.Fprintf(w, "\n%s\n", summary)
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nflags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// newFlags returns a flag set that reports errors instead of exiting and
// prints nothing itself: runCommand prints help, main prints errors.
func newFlags(name string, _ io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bridge "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses a command's flags; it takes no positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	return parseArgs(fs, args, 0)
}

// parseArgs parses flags followed by exactly n positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, n int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpRequest{fs}
		}
		return usageError{fmt.Errorf("%s: %w (see %s --help)", fs.Name(), err, fs.Name())}
	}
	// A --help after a positional argument is still a request for help.
	for _, a := range fs.Args() {
		if a == "-h" || a == "-help" || a == "--help" {
			return helpRequest{fs}
		}
	}
	switch {
	case fs.NArg() > n:
		return usageError{fmt.Errorf("%s: unexpected argument %q (see %s --help)", fs.Name(), fs.Arg(n), fs.Name())}
	case fs.NArg() < n:
		return usageError{fmt.Errorf("%s: want %d argument(s) (see %s --help)", fs.Name(), n, fs.Name())}
	}
	return nil
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	if err := parseArgs(fs, args, 1); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := cfg.CheckFiles(fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "config %s is valid\n", fs.Arg(0))
	return nil
}
