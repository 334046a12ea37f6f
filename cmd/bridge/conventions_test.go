package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// conventionRules are the parts of docs/conventions.md a line of code can
// break on its own: a line matching bad and not except breaks the rule.
var conventionRules = []conventionRule{
	{name: "the error attribute's key is err", bad: regexp.MustCompile(`"error", +[a-z]*[eE]rr\b`)},
	{name: "a nil logger discards, it is not an error", bad: regexp.MustCompile(`errors\.New\("[^"]*nil [lL]ogger"\)`)},
	// The constructor tags the logger it is given with its component; a
	// caller that tags it too writes the key twice. Receipts are the
	// exception until bridge.NewReceipts tags its own logger.
	{
		name: "the constructor sets component, not its caller",
		bad: regexp.MustCompile(`(\b(bridge|broker|overlay|storage|hw|led|ecc|tpm|pkcs11|systemd|gateway)\.(New[A-Za-z]*|Open)\(|` +
			`Logger:\s+[A-Za-z.]*\.With\(|Logger = [A-Za-z.]*\.With\().*"component"`),
		except: regexp.MustCompile(`"component", "receipts"`),
	},
	{
		name:   "metric names start with tributary_",
		bad:    regexp.MustCompile(`(Name: |NewDesc\()"(?:[^t"]|t[^r])[a-z_]*_(total|seconds|bytes|messages|readings|held)"`),
		except: regexp.MustCompile(`Namespace: "tributary"`),
	},
}

type conventionRule struct {
	name        string
	bad, except *regexp.Regexp
}

func (r conventionRule) broken(line string) bool {
	return r.bad.MatchString(line) && (r.except == nil || !r.except.MatchString(line))
}

// TestConventions scans every non-test Go file of the module for the
// conventions above.
func TestConventions(t *testing.T) {
	sourceGo := func(path string) bool {
		return strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") && !strings.HasSuffix(path, ".pb.go")
	}
	eachLine(t, sourceGo, func(at, line string) {
		for _, r := range conventionRules {
			if r.broken(line) {
				t.Errorf("%s: %s (docs/conventions.md):\n\t%s", at, r.name, strings.TrimSpace(line))
			}
		}
	})
}

// oldMetricName is a metric name from before the tributary_ prefix.
var oldMetricName = regexp.MustCompile(`\bbridge_(readings|messages|sign|signing|clock|forward|order|delivered|delivery|http)_`)

// TestNoOldMetricNames finds the pipeline's metric names from before the
// rename anywhere in the tree (code, tests, scripts, docs, the example
// config) except the README's table of renames.
func TestNoOldMetricNames(t *testing.T) {
	text := func(path string) bool {
		switch filepath.Ext(path) {
		case ".go", ".sh", ".md", ".toml", ".py", ".service":
			return filepath.Base(path) != "conventions_test.go"
		}
		return false
	}
	eachLine(t, text, func(at, line string) {
		if oldMetricName.MatchString(line) && !strings.HasPrefix(line, "| `bridge_") && !strings.Contains(line, "sed -E") {
			t.Errorf("%s: old metric name, renamed to tributary_… (README, Metric names):\n\t%s", at, strings.TrimSpace(line))
		}
	})
}

// eachLine calls check with "path:line" and the text of every line of
// the module's files that keep selects (by path relative to the module).
func eachLine(t *testing.T, keep func(path string) bool, check func(at, line string)) {
	t.Helper()
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "node_modules", ".git", "out", "dist", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !keep(rel) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for n, line := range strings.Split(string(data), "\n") {
			check(fmt.Sprintf("%s:%d", rel, n+1), line)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConventionRulesFire keeps the rules able to fail.
func TestConventionRulesFire(t *testing.T) {
	bad := []string{
		`log.Warn("store failed", "error", err)`,
		`return nil, errors.New("broker: nil logger")`,
		`b, err := broker.New(cfg, h, log.With("component", "mqtt"))`,
		`Logger: log.With("component", "key"),`,
		`g.storer = bridge.NewStorer(g.store, scfg, log.With("component", "storer"))`,
		`Name: "bridge_readings_in_total", Help: "Readings."`,
		`synced: prometheus.NewDesc("bridge_clock_max_error_seconds", "", nil, nil),`,
	}
	good := []string{
		`log.Warn("store failed", "err", err)`,
		`log: cfg.Logger.With("component", "overlay"),`,
		`Logger: log.With("orderer", name),`,
		`Name: "tributary_readings_in_total", Help: "Readings."`,
		`rcfg.Logger = log.With("component", "receipts")`,
		`Logger: slog.New(mochiHandler{log.With("component", "mochi").Handler(), level}),`,
		`Namespace: "tributary", Subsystem: "overlay", Name: "redials_total",`,
	}
	if !oldMetricName.MatchString(`bridge_order_held_total{orderer="store"}`) || oldMetricName.MatchString("bridge_config FILE") {
		t.Error("oldMetricName does not tell old metric names from other bridge_ words")
	}
	for i, line := range append(bad, good...) {
		hit := false
		for _, r := range conventionRules {
			hit = hit || r.broken(line)
		}
		if want := i < len(bad); hit != want {
			t.Errorf("%q: broken = %v, want %v", line, hit, want)
		}
	}
}
