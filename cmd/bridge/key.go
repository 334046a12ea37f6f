package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/tributary-iot/tributary/broker"
	"github.com/tributary-iot/tributary/gateway"
	"github.com/tributary-iot/tributary/hw"
)

const keyUsage = `usage: bridge key <new|show|import|provision-ecc> [--config FILE] [--uri URI]

  new     create the gateway key (in hardware where the URI names hardware)
  show    print the publisher ID and the signature type it produces
  import  read a 32-byte secp256k1 private key as hex on stdin and store it
  provision-ecc
          configure and LOCK a blank ATECC608 (irreversible) and generate the
          key in the URI's slot; asks for confirmation on stdin

` + "`bridge key SUBCOMMAND --help`" + ` prints its flags.
`

var keySummaries = map[string]string{
	"new":           "create the gateway key (in hardware where the URI names hardware)",
	"show":          "print the publisher ID and the signature type it produces",
	"import":        "read a 32-byte secp256k1 private key as hex on stdin and store it",
	"provision-ecc": "configure and LOCK a blank ATECC608 (irreversible) and generate the key in the URI's slot; asks for confirmation on stdin",
}

func keySummary(sub string) string { return keySummaries[sub] }

func cmdKey(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keyUsage)
		return usageError{errors.New("key: want new, show, import or provision-ecc")}
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, keyUsage)
		return nil
	}
	if _, ok := keySummaries[sub]; !ok {
		fmt.Fprint(stderr, keyUsage)
		return usageError{fmt.Errorf("key: unknown subcommand %q", sub)}
	}
	fs := newFlags("key "+sub, stderr)
	configPath := fs.String("config", "", "config file (default: embedded defaults)")
	uriFlag := fs.String("uri", "", "key URI (default: key.uri from the config, else file://<state_dir>/key)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *uriFlag != "" {
		cfg.Key.URI = *uriFlag
	}
	key, err := gateway.ManageKey(ctx, cfg, sub, stdin, stderr)
	if err != nil {
		return err
	}
	defer key.Close()
	fmt.Fprintln(stdout, hw.Describe(key))
	return nil
}

func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := parseFlags(newFlags("passwd", stderr), args); err != nil {
		return err
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		return err
	}
	hash, err := broker.HashPassword(pw)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	fmt.Fprintln(stdout, hash)
	return nil
}

// readPassword prompts on a terminal without echo, twice to catch typos;
// from a pipe it reads one line.
func readPassword(stdin io.Reader, prompt io.Writer) (string, error) {
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("passwd: read stdin: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usageError{errors.New("passwd: empty password on stdin")}
		}
		return pw, nil
	}
	ask := func(label string) (string, error) {
		fmt.Fprint(prompt, label)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("passwd: read password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask("Password: ")
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", usageError{errors.New("passwd: empty password")}
	}
	again, err := ask("Repeat password: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", usageError{errors.New("passwd: the passwords differ")}
	}
	return pw, nil
}
