package broker

import (
	"fmt"
	"strings"
)

// keyLines records where keys are assigned in a TOML document, so that validation errors can
// name a line. BurntSushi/toml reports positions only for syntax errors and keys its metadata by
// dotted path, which is ambiguous across [[array]] elements; this scanner adds the element index.
// It only locates keys: toml.Decode has already checked the syntax.
type keyLines []keyLine

type keyLine struct {
	table string // dotted table path, "" for the root table
	elem  int    // index within an [[array]] of tables, 0 for plain tables
	key   string // "" for the table header itself
	line  int    // 1-based
}

// line returns the line of key in element elem of table, falling back to the element's header
// and then to 0 when the key cannot be located.
func (kl keyLines) line(table string, elem int, key string) int {
	header := 0
	for _, l := range kl {
		if l.table != table || l.elem != elem {
			continue
		}
		if l.key == key {
			return l.line
		}
		if l.key == "" && header == 0 {
			header = l.line
		}
	}
	return header
}

// where returns "name:line" for key in element elem of table, or just name if not located.
func (kl keyLines) where(name, table string, elem int, key string) string {
	if line := kl.line(table, elem, key); line > 0 {
		return fmt.Sprintf("%s:%d", name, line)
	}
	return name
}

// firstLine returns the first line assigning key in any element of table, or 0.
func (kl keyLines) firstLine(table, key string) int {
	for _, l := range kl {
		if l.table == table && l.key == key {
			return l.line
		}
	}
	return 0
}

// scanKeyLines finds table headers and key assignments at the start of lines, skipping the
// insides of multi-line strings and multi-line arrays or inline tables.
func scanKeyLines(data []byte) keyLines {
	var (
		out   keyLines
		s     scanState
		table string
		elems = map[string]int{}
	)
	for i, text := range strings.Split(string(data), "\n") {
		atStart := s.depth == 0 && s.multi == ""
		s.consume(text)
		if !atStart {
			continue
		}
		t := strings.TrimSpace(text)
		switch {
		case strings.HasPrefix(t, "[["):
			table = tableName(t[2:], "]]")
			elems[table]++
			out = append(out, keyLine{table: table, elem: elems[table] - 1, line: i + 1})
		case strings.HasPrefix(t, "["):
			table = tableName(t[1:], "]")
			out = append(out, keyLine{table: table, line: i + 1})
		default:
			if k, ok := assignedKey(t); ok {
				elem := max(elems[table]-1, 0)
				out = append(out, keyLine{table: table, elem: elem, key: k, line: i + 1})
			}
		}
	}
	return out
}

func tableName(rest, closing string) string {
	if i := strings.Index(rest, closing); i >= 0 {
		rest = rest[:i]
	}
	parts := strings.Split(rest, ".")
	for i, p := range parts {
		parts[i] = unquoteKey(strings.TrimSpace(p))
	}
	return strings.Join(parts, ".")
}

// assignedKey returns the key of a "key = value" line (the first component of a dotted key).
func assignedKey(t string) (string, bool) {
	if t == "" || t[0] == '#' {
		return "", false
	}
	eq := strings.IndexByte(t, '=')
	if eq <= 0 {
		return "", false
	}
	k := strings.TrimSpace(t[:eq])
	if dot := strings.IndexByte(k, '.'); dot > 0 && k[0] != '"' && k[0] != '\'' {
		k = strings.TrimSpace(k[:dot])
	}
	return unquoteKey(k), true
}

func unquoteKey(k string) string {
	if len(k) >= 2 && (k[0] == '"' || k[0] == '\'') && k[len(k)-1] == k[0] {
		return k[1 : len(k)-1]
	}
	return k
}

// scanState tracks whether the scanner is inside a multi-line string or a bracketed value.
type scanState struct {
	multi string // `"""` or `'''` while inside a multi-line string
	depth int    // open [ and { of values
}

// consume advances the state over one line of text.
func (s *scanState) consume(line string) {
	inKeyOrHeader := s.depth == 0 && s.multi == ""
	if inKeyOrHeader {
		// Brackets of a table header are not value brackets; only look after '='.
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			return
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			return
		}
		line = line[eq+1:]
	}
	for i := 0; i < len(line); i++ {
		if s.multi != "" {
			if strings.HasPrefix(line[i:], s.multi) {
				i += len(s.multi) - 1
				s.multi = ""
			}
			continue
		}
		switch c := line[i]; c {
		case '#':
			return
		case '"', '\'':
			q := string(c)
			if strings.HasPrefix(line[i:], q+q+q) {
				s.multi = q + q + q
				i += 2
				continue
			}
			i = skipString(line, i)
		case '[', '{':
			s.depth++
		case ']', '}':
			if s.depth > 0 {
				s.depth--
			}
		}
	}
}

// skipString returns the index of the closing quote of the single-line string opening at i.
func skipString(line string, i int) int {
	q := line[i]
	for j := i + 1; j < len(line); j++ {
		switch {
		case q == '"' && line[j] == '\\':
			j++
		case line[j] == q:
			return j
		}
	}
	return len(line)
}
