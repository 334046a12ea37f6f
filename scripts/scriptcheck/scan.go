package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// use is one host command called by a script.
type use struct {
	line int
	cmd  string
}

// script is what one shell file (or the Makefile's recipes) needs and installs.
type script struct {
	path     string // relative to the repository root, slash-separated
	uses     []use
	installs []string        // Debian packages the file installs (install_missing, apt-get install)
	funcs    map[string]bool // shell functions the file defines
	sources  []string        // files it sources (. or source), relative to the root
	strict   map[string]bool // which of strictLines (or stricter forms of them) the file has
}

// installers are the scripts' helpers that install the Debian packages named as their arguments.
var installers = map[string]bool{"install_missing": true}

// shellBuiltins are bash's builtins and keywords: they need no package.
var shellBuiltins = setOf(`. : [ [[ alias bg bind break builtin caller cd command compgen complete compopt
	continue declare dirs disown echo enable eval exec exit export false fc fg getopts hash help history
	jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly return set shift shopt
	source suspend test time times trap true type typeset ulimit umask unalias unset wait`)

// wrappers run the command that follows their options; the wrapper itself is a use too.
var wrappers = setOf("timeout env nice nohup xargs exec sudo")

func setOf(words string) map[string]bool {
	m := make(map[string]bool)
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

// scanShell parses one bash file of the repository at root.
func scanShell(root, rel string) (*script, error) {
	src, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return nil, err
	}
	return parseShell(root, rel, src, 0)
}

// parseShell collects the calls, installs, functions and sourced files of src. lineOffset is added to
// every line number (for Makefile recipes, which are parsed one at a time).
func parseShell(root, rel string, src []byte, lineOffset int) (*script, error) {
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(bytes.NewReader(src), rel)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", rel, err)
	}
	s := &script{path: rel, funcs: make(map[string]bool), strict: strictness(src)}
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.FuncDecl:
			s.funcs[n.Name.Value] = true
		case *syntax.CallExpr:
			s.addCall(root, n.Args, int(n.Pos().Line())+lineOffset)
		}
		return true
	})
	return s, nil
}

// addCall records the command of one simple command, looking through wrappers such as timeout and xargs.
func (s *script) addCall(root string, args []*syntax.Word, line int) {
	for len(args) > 0 {
		name := args[0].Lit()
		if name == "" && isSudoVar(args[0]) {
			args = args[1:]
			continue
		}
		if name == "" || strings.Contains(name, "/") || strings.Contains(name, "=") {
			return // a project file ("$T/boottest", ./scripts/x.sh), or a command the parser cannot name
		}
		switch {
		case name == "." || name == "source":
			if len(args) > 1 {
				s.addSource(root, args[1])
			}
			return
		case name == "command" && len(args) > 1 && args[1].Lit() == "-v":
			return // a probe for a command, not a use
		case installers[name]:
			s.installs = append(s.installs, literals(args[1:])...)
			return
		case name == "apt-get":
			s.uses = append(s.uses, use{line, name})
			if i := indexOf(args, "install"); i > 0 {
				s.installs = append(s.installs, literals(args[i+1:])...)
			}
			return
		case name == "chroot":
			s.uses = append(s.uses, use{line, name})
			return // what follows runs inside the target's root, from its own packages
		}
		if !shellBuiltins[name] {
			s.uses = append(s.uses, use{line, name})
		}
		if !wrappers[name] {
			return
		}
		args = skipWrapperArgs(name, args[1:])
	}
}

// skipWrapperArgs drops a wrapper's own options (and timeout's duration), leaving the wrapped command.
func skipWrapperArgs(wrapper string, args []*syntax.Word) []*syntax.Word {
	for len(args) > 0 {
		lit := args[0].Lit()
		if strings.HasPrefix(lit, "-") || (wrapper == "env" && strings.Contains(lit, "=")) {
			args = args[1:]
			continue
		}
		break
	}
	if wrapper == "timeout" && len(args) > 0 {
		args = args[1:] // the duration
	}
	return args
}

func isSudoVar(w *syntax.Word) bool {
	if len(w.Parts) != 1 {
		return false
	}
	p, ok := w.Parts[0].(*syntax.ParamExp)
	return ok && p.Param.Value == "sudo"
}

func indexOf(args []*syntax.Word, lit string) int {
	for i, a := range args {
		if a.Lit() == lit {
			return i
		}
	}
	return -1
}

// literals returns the words that are plain literals and no options (package names).
func literals(args []*syntax.Word) []string {
	var out []string
	for _, a := range args {
		if lit := a.Lit(); lit != "" && !strings.HasPrefix(lit, "-") {
			out = append(out, lit)
		}
	}
	return out
}

// addSource resolves the file of `. "$HERE/lib.sh"` or `source scripts/bench-lib.sh` from its literal
// parts: relative to the script's directory, else to the repository root.
func (s *script) addSource(root string, w *syntax.Word) {
	var lit strings.Builder
	for _, p := range w.Parts {
		switch p := p.(type) {
		case *syntax.Lit:
			lit.WriteString(p.Value)
		case *syntax.DblQuoted:
			for _, q := range p.Parts {
				if l, ok := q.(*syntax.Lit); ok {
					lit.WriteString(l.Value)
				}
			}
		}
	}
	name := strings.TrimPrefix(lit.String(), "/")
	for _, dir := range []string{filepath.Dir(s.path), "."} {
		rel := filepath.ToSlash(filepath.Clean(filepath.Join(dir, name)))
		if _, err := os.Stat(filepath.Join(root, rel)); err == nil {
			s.sources = append(s.sources, rel)
			return
		}
	}
}

// strictness tells which of strictLines src has at the start of a line; "set -eEuo pipefail" counts as
// "set -euo pipefail".
func strictness(src []byte) map[string]bool {
	have := make(map[string]bool)
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "set -e") && strings.Contains(line, "pipefail") {
			opts := strings.Fields(line)[1]
			if strings.Contains(opts, "u") && strings.Contains(opts, "o") {
				have[strictLines[0]] = true
			}
		}
		if strings.HasPrefix(line, strictLines[1]) {
			have[strictLines[1]] = true
		}
	}
	return have
}

var makeVar = regexp.MustCompile(`\$[({][A-Za-z_]+[)}]`)

// scanMakefile parses each recipe of a Makefile as shell: continuation lines joined, make's variables
// replaced by a word, $$ unescaped.
func scanMakefile(root, rel string) (*script, error) {
	src, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return nil, err
	}
	all := &script{path: rel, funcs: make(map[string]bool)}
	var recipe strings.Builder
	start, lineNo := 0, 0
	flush := func() error {
		if recipe.Len() == 0 {
			return nil
		}
		text := makeVar.ReplaceAllString(recipe.String(), "MAKEVAR")
		text = strings.ReplaceAll(text, "$$", "$")
		s, err := parseShell(root, rel, []byte(text), start-1)
		recipe.Reset()
		if err != nil {
			return err
		}
		all.uses = append(all.uses, s.uses...)
		all.installs = append(all.installs, s.installs...)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(src))
	continued := false
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if !continued && !strings.HasPrefix(line, "\t") {
			continue
		}
		if !continued {
			start = lineNo
			line = strings.TrimLeft(strings.TrimPrefix(line, "\t"), "@-+")
		}
		continued = strings.HasSuffix(line, `\`)
		recipe.WriteString(strings.TrimSuffix(line, `\`))
		recipe.WriteString(" ")
		if !continued {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return all, sc.Err()
}
