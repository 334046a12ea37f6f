// Command scriptcheck checks that every host command the project's scripts call (scripts/, firmware-image/,
// packaging/, .ci/ and the Makefile's recipes) comes from a Debian package that a fresh machine has, or
// that the script installs before it runs, and that every script stops at its first failing step
// (set -euo pipefail, shopt -s inherit_errexit): a script that works only on a developer's machine, or
// carries on after a failed build step, fails here, not an hour into a CI run. scripts/test.sh runs it
// first.
//
//	go run ./scripts/scriptcheck [-root DIR]
//
// commands.txt maps each command to the packages it needs (more than one where a command needs files of
// another package, such as QEMU's option ROMs); fresh-machine.txt is the environment's list of the
// packages a fresh machine of this project's kind has.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	root := flag.String("root", ".", "repository root")
	commands := flag.String("commands", "", "command → package mapping (default ROOT/scripts/scriptcheck/commands.txt)")
	fresh := flag.String("fresh", "", "a fresh machine's package list (default ROOT/scripts/scriptcheck/fresh-machine.txt)")
	flag.Parse()
	if *commands == "" {
		*commands = filepath.Join(*root, "scripts/scriptcheck/commands.txt")
	}
	if *fresh == "" {
		*fresh = filepath.Join(*root, "scripts/scriptcheck/fresh-machine.txt")
	}
	if err := run(*root, *commands, *fresh); err != nil {
		fmt.Fprintln(os.Stderr, "scriptcheck:", err)
		os.Exit(1)
	}
}

func run(root, commandsFile, freshFile string) error {
	in, err := loadInputs(commandsFile, freshFile)
	if err != nil {
		return err
	}
	problems, err := check(root, in)
	if err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d host command(s) would be missing on a fresh machine", len(problems))
	}
	fmt.Println("scriptcheck: every command the scripts call is on a fresh machine or installed by its script")
	return nil
}
