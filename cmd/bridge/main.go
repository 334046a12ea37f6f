// Command bridge is the Tributary gateway: an embedded MQTT broker whose
// readings are stored durably, signed as Streamr messages with the
// gateway's identity, and forwarded to the Streamr overlay.
//
// Usage:
//
//	bridge run [--config FILE] [--bootstrap-node]
//	bridge check-config FILE
//	bridge key new|show|import [--config FILE] [--uri URI]
//	bridge export --stream ID [--partition N] [--from TS] [--to TS] [-o FILE] [--config FILE]
//	bridge passwd
//	bridge config-example
//	bridge version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal ends the process at once, drain or not
	err := runCommand(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) && !errors.As(err, new(loggedError)) {
			fmt.Fprintln(os.Stderr, "bridge:", err)
		}
		os.Exit(exitCode(err))
	}
}

// loggedError is an error the gateway's log already holds; main exits
// non-zero without printing it again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// usageError marks errors in how the command was called (exit status 2).
type usageError struct{ error }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	var coded interface{ ExitCode() int } // e.g. unsignedError: 3
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	return 1
}

const usage = `usage: bridge <command> [flags]

commands:
  run             run the gateway (default config: embedded defaults)
  check-config    validate a config file without starting
  key             new | show | import: manage the gateway identity
  export          write stored messages of a stream in Streamr raw format
  passwd          read a password on stdin, print its bcrypt hash for users_file
  config-example  print a config file documenting every key
  version         print the version
`

// runCommand dispatches a subcommand; main is only process plumbing.
func runCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
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
	case "export":
		return cmdExport(ctx, rest, stdout, stderr)
	case "passwd":
		return cmdPasswd(stdin, stdout)
	case "config-example":
		_, err := stdout.Write(exampleConfig)
		return err
	case "version":
		fmt.Fprintln(stdout, "bridge", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bridge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("check-config: want exactly one FILE")}
	}
	cfg, err := loadConfig(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := cfg.checkFiles(fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "config %s is valid\n", fs.Arg(0))
	return nil
}
