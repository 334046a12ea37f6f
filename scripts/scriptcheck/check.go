package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// scriptDirs hold the host-side scripts. Their subtrees that run elsewhere are skipped: the image's root
// tree and the .deb's maintainer scripts run on the gateway, from the image's or the target's packages.
var (
	scriptDirs = []string{".ci", "scripts", "firmware-image", "packaging"}
	skipDirs   = setOf("firmware-image/rootfs packaging/debian firmware-image/out testdata node_modules")
)

// toolchain marks a command that is on every fresh machine without a Debian package (Go in /usr/local/go).
const toolchain = "@toolchain"

// problem is one finding of the check, in the file:line form editors jump to.
type problem struct {
	file string
	line int
	msg  string
}

func (p problem) String() string { return fmt.Sprintf("%s:%d: %s", p.file, p.line, p.msg) }

// inputs are the check's two committed lists.
type inputs struct {
	commands map[string][]string // command → the Debian packages it needs
	fresh    map[string]bool     // Debian packages a fresh machine has
}

// loadInputs reads commands.txt ("command package..." lines) and the fresh machine's package list
// ("apt<TAB>name<TAB>version" lines, as the environment's list has them).
func loadInputs(commandsFile, freshFile string) (*inputs, error) {
	in := &inputs{commands: make(map[string][]string), fresh: make(map[string]bool)}
	err := eachLine(commandsFile, func(lineNo int, fields []string) error {
		if len(fields) < 2 {
			return fmt.Errorf("%s:%d: want \"command package...\"", commandsFile, lineNo)
		}
		if _, dup := in.commands[fields[0]]; dup {
			return fmt.Errorf("%s:%d: command %s listed twice", commandsFile, lineNo, fields[0])
		}
		in.commands[fields[0]] = fields[1:]
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(freshFile, func(lineNo int, fields []string) error {
		if len(fields) >= 2 && fields[0] == "apt" {
			in.fresh[fields[1]] = true
		}
		return nil
	})
	return in, err
}

// eachLine calls fn with the fields of every line of file that is not blank and not a # comment
// (a trailing # comment is cut off).
func eachLine(file string, fn func(lineNo int, fields []string) error) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for lineNo := 1; sc.Scan(); lineNo++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		if fields := strings.Fields(text); len(fields) > 0 {
			if err := fn(lineNo, fields); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	return nil
}

// findScripts lists the repository's host-side shell scripts and its Makefile, relative to root.
func findScripts(root string) ([]string, error) {
	var files []string
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err == nil {
		files = append(files, "Makefile")
	}
	for _, dir := range scriptDirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			rel, _ := filepath.Rel(root, path)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				if skipDirs[rel] || skipDirs[d.Name()] {
					return filepath.SkipDir
				}
				return nil
			}
			if isShell(path) {
				files = append(files, rel)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// isShell tells a bash or sh script by its .sh name or its #! line.
func isShell(path string) bool {
	if strings.HasSuffix(path, ".sh") {
		return true
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 64)
	n, _ := f.Read(head)
	first, _, _ := strings.Cut(string(head[:n]), "\n")
	return strings.HasPrefix(first, "#!") && (strings.HasSuffix(first, "sh") || strings.Contains(first, "bash"))
}

// check scans every script under root and reports each command that no committed mapping names, and
// each package a command needs that a fresh machine lacks and the script (or, for a sourced library,
// a script that sources it) does not install.
func check(root string, in *inputs) ([]problem, error) {
	files, err := findScripts(root)
	if err != nil {
		return nil, err
	}
	scripts := make(map[string]*script)
	for _, rel := range files {
		var s *script
		if rel == "Makefile" {
			s, err = scanMakefile(root, rel)
		} else {
			s, err = scanShell(root, rel)
		}
		if err != nil {
			return nil, err
		}
		scripts[rel] = s
	}
	var problems []problem
	for _, rel := range files {
		s := scripts[rel]
		if p, ok := errexitProblem(root, s, scripts); !ok {
			problems = append(problems, p)
		}
		funcs, installs := s.context(scripts)
		for _, u := range s.uses {
			if funcs[u.cmd] {
				continue
			}
			pkgs, ok := in.commands[u.cmd]
			if !ok {
				problems = append(problems, problem{rel, u.line, fmt.Sprintf(
					"command %q has no package in scripts/scriptcheck/commands.txt: add it there, and install that package in this script unless a fresh machine has it", u.cmd)})
				continue
			}
			for _, pkg := range pkgs {
				if pkg != toolchain && !in.fresh[pkg] && !installs[pkg] {
					problems = append(problems, problem{rel, u.line, fmt.Sprintf(
						"command %q needs Debian package %s, which a fresh machine lacks and this script does not install", u.cmd, pkg)})
				}
			}
		}
	}
	sort.Slice(problems, func(i, j int) bool {
		if problems[i].file != problems[j].file {
			return problems[i].file < problems[j].file
		}
		return problems[i].line < problems[j].line
	})
	return problems, nil
}

// strictLines make a bash script stop at the first failing command, in a pipeline and inside $(…) too.
var strictLines = []string{"set -euo pipefail", "shopt -s inherit_errexit"}

// errexitProblem reports a script that can carry on after a failed step: every executable bash script
// (not the Makefile, not a sourced library) must have strictLines itself or source a file that has them.
func errexitProblem(root string, s *script, scripts map[string]*script) (problem, bool) {
	if s.path == "Makefile" || !executable(filepath.Join(root, s.path)) {
		return problem{}, true
	}
	files := append([]string{s.path}, s.sources...)
	for _, want := range strictLines {
		found := false
		for _, f := range files {
			if o := scripts[f]; o != nil && o.strict[want] {
				found = true
			}
		}
		if !found {
			return problem{s.path, 1, fmt.Sprintf("no %q: a failing step would not stop the script", want)}, false
		}
	}
	return problem{}, true
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&0o111 != 0
}

// context returns the functions a script can call (its own and its sourced files') and the packages that
// are installed when it runs: its own installs and its sourced files', and for a file that others
// source, theirs.
func (s *script) context(scripts map[string]*script) (funcs, installs map[string]bool) {
	funcs, installs = make(map[string]bool), make(map[string]bool)
	add := func(o *script) {
		for f := range o.funcs {
			funcs[f] = true
		}
		for _, p := range o.installs {
			installs[p] = true
		}
	}
	add(s)
	for _, src := range s.sources {
		if o := scripts[src]; o != nil {
			add(o)
		}
	}
	for _, o := range scripts {
		for _, src := range o.sources {
			if src == s.path {
				add(o)
			}
		}
	}
	return funcs, installs
}
