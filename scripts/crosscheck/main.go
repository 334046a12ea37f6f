// Command crosscheck verifies raw-format message files with the official
// Streamr SDK: it runs streamr/testdata/sdkcheck/verify.mjs (which uses
// @streamr/utils) on every *.raw file in a directory and fails unless every
// message of every file is valid. scripts/test.sh runs it on the messages
// the hardware key backends signed in their tests.
//
// Usage: go run ./scripts/crosscheck DIR
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

type summary struct {
	Total   int               `json:"total"`
	Valid   int               `json:"valid"`
	Invalid []json.RawMessage `json:"invalid"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: crosscheck DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "crosscheck:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.raw"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no .raw files in %s: the backends wrote nothing to check", dir)
	}
	failed := 0
	for _, f := range files {
		out, err := exec.Command("node", "streamr/testdata/sdkcheck/verify.mjs", f).Output()
		if err != nil {
			return fmt.Errorf("verify %s: %w", f, err)
		}
		var s summary
		if err := json.Unmarshal(out, &s); err != nil {
			return fmt.Errorf("verify %s: summary %q: %w", f, out, err)
		}
		status := "ok"
		if s.Valid == 0 || len(s.Invalid) > 0 {
			status = fmt.Sprintf("FAILED %s", s.Invalid)
			failed++
		}
		fmt.Printf("%-40s %3d valid of %3d  %s\n", filepath.Base(f), s.Valid, s.Total, status)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d files have messages the Streamr SDK rejects", failed, len(files))
	}
	return nil
}
