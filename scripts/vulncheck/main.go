// Command vulncheck is the gate on govulncheck's findings: it reads the JSON stream of
// `govulncheck -format json` on stdin, prints every vulnerability the code calls, and fails when one is
// not in the accepted list (a committed file of "ID module reason" lines, for a vulnerability whose fix
// cannot be had here, each with why) or when an accepted one is no longer found (the list stays true).
//
//	govulncheck -db file://DIR -format json ./... | go run ./scripts/vulncheck -accept scripts/vulncheck/accepted.txt
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// message is one object of govulncheck's JSON stream (only the parts the gate reads).
type message struct {
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string  `json:"osv"`
		FixedVersion string  `json:"fixed_version"`
		Trace        []frame `json:"trace"`
	} `json:"finding"`
}

type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
}

// vuln is a vulnerability the code reaches (a finding whose trace ends in a called function).
type vuln struct {
	id, module, version, fixed, summary string
}

func main() {
	accept := flag.String("accept", "", "file of accepted vulnerabilities: \"ID module reason...\" lines")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *accept); err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(1)
	}
}

func run(r io.Reader, w io.Writer, acceptFile string) error {
	called, err := calledVulns(r)
	if err != nil {
		return err
	}
	accepted := map[string]string{}
	if acceptFile != "" {
		if accepted, err = loadAccepted(acceptFile); err != nil {
			return err
		}
	}
	var failures []string
	for _, v := range called {
		key := v.id + " " + v.module
		verdict := "FAIL"
		if reason, ok := accepted[key]; ok {
			verdict = "accepted (" + reason + ")"
			delete(accepted, key)
		} else {
			failures = append(failures, v.id)
		}
		fmt.Fprintf(w, "%s %s@%s, fixed in %s: %s\n    %s\n", v.id, v.module, v.version, orNone(v.fixed), v.summary, verdict)
	}
	for key := range accepted {
		failures = append(failures, key+" (accepted but no longer found: remove it from "+acceptFile+")")
	}
	sort.Strings(failures)
	if len(failures) > 0 {
		return fmt.Errorf("%d vulnerability finding(s) fail the gate: %s", len(failures), strings.Join(failures, ", "))
	}
	fmt.Fprintf(w, "vulncheck: %d called vulnerabilities, all accepted with a reason\n", len(called))
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no release"
	}
	return s
}

// calledVulns reads govulncheck's JSON stream and returns the called vulnerabilities, one per ID and module.
func calledVulns(r io.Reader) ([]vuln, error) {
	dec := json.NewDecoder(r)
	summaries := make(map[string]string)
	seen := make(map[string]bool)
	var called []vuln
	for {
		var m message
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read govulncheck's JSON output: %w", err)
		}
		if m.OSV != nil {
			summaries[m.OSV.ID] = m.OSV.Summary
		}
		if m.Finding == nil || len(m.Finding.Trace) == 0 || m.Finding.Trace[0].Function == "" {
			continue // a module or package that is only required or imported, not called
		}
		top := m.Finding.Trace[0]
		v := vuln{id: m.Finding.OSV, module: top.Module, version: top.Version, fixed: m.Finding.FixedVersion}
		if key := v.id + " " + v.module; !seen[key] {
			seen[key] = true
			called = append(called, v)
		}
	}
	if len(seen) == 0 && len(summaries) == 0 && dec.InputOffset() == 0 {
		return nil, errors.New("no govulncheck output on stdin")
	}
	for i := range called {
		called[i].summary = summaries[called[i].id]
	}
	sort.Slice(called, func(i, j int) bool { return called[i].id < called[j].id })
	return called, nil
}

// loadAccepted reads "ID module reason..." lines (# comments, blank lines skipped); a reason is required.
func loadAccepted(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	accepted := make(map[string]string)
	sc := bufio.NewScanner(f)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			return nil, fmt.Errorf("%s:%d: want \"ID module reason...\"", file, lineNo)
		}
		accepted[fields[0]+" "+fields[1]] = strings.Join(fields[2:], " ")
	}
	return accepted, sc.Err()
}
