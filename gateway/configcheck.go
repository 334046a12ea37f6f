package gateway

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// checkConfigTypes walks the TOML document against Config's types and
// returns every unknown key and type error, each naming the file, line,
// column and the key as the user wrote it (go-toml stops at the first and
// names Go fields). patched is data with every mistyped key/value blanked
// out (newlines kept, so lines stay), for decoding what is left; it is nil
// when a mistake cannot be blanked (a table header of the wrong kind).
// A syntax error is returned as the only error.
func checkConfigTypes(path string, data []byte) (errs []error, patched []byte) {
	c := typeChecker{path: path, patched: append([]byte(nil), data...), arrays: map[string]int{}}
	c.p.Reset(data)
	table := tableRef{typ: reflect.TypeOf(Config{})}
	for c.p.NextExpression() {
		e := c.p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = c.header(e)
		case unstable.KeyValue:
			c.keyValue(table, e)
		}
	}
	if err := c.p.Error(); err != nil {
		return []error{c.syntaxError(err)}, nil
	}
	if c.unpatchable {
		return c.errs, nil
	}
	return c.errs, c.patched
}

type typeChecker struct {
	path        string
	p           unstable.Parser
	patched     []byte
	arrays      map[string]int // [[table]] name → tables seen so far
	errs        []error
	unpatchable bool
}

// tableRef is the table that following key/values belong to; typ is nil
// under an unknown or mistyped header (its keys were reported with it).
type tableRef struct {
	typ   reflect.Type
	label string // "" for the top level, "[storage]", "[[rule]] #2"
}

func (t tableRef) in() string {
	if t.label == "" {
		return ""
	}
	return " in " + t.label
}

func (c *typeChecker) header(e *unstable.Node) tableRef {
	keys := nodeKeys(e)
	name := strings.Join(keys, ".")
	typ, ok := fieldType(reflect.TypeOf(Config{}), keys[:len(keys)-1], c.arrays)
	if ok {
		typ, ok = structField(typ, keys[len(keys)-1])
	}
	if !ok {
		c.errorf(e, "unknown table [%s]", name)
		return tableRef{}
	}
	isArray := typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct
	switch {
	case e.Kind == unstable.ArrayTable && isArray:
		c.arrays[name]++
		return tableRef{typ: typ.Elem(), label: fmt.Sprintf("[[%s]] #%d", name, c.arrays[name])}
	case e.Kind == unstable.Table && typ.Kind() == reflect.Struct && !isText(typ):
		return tableRef{typ: typ, label: "[" + name + "]"}
	case isArray:
		c.errorf(e, "[%s]: %s is a list of tables: write [[%s]]", name, name, name)
	default:
		c.errorf(e, "[%s]: %s is not a table", name, name)
	}
	c.unpatchable = true
	return tableRef{}
}

func (c *typeChecker) keyValue(t tableRef, e *unstable.Node) {
	if t.typ == nil {
		return
	}
	keys := nodeKeys(e)
	typ, ok := fieldType(t.typ, keys[:len(keys)-1], nil)
	if ok {
		typ, ok = structField(typ, keys[len(keys)-1])
	}
	key := strings.Join(keys, ".")
	if !ok {
		c.errorf(e, "unknown key %q%s", key, t.in())
		return
	}
	if problem := c.valueProblem(typ, e.Value()); problem != "" {
		c.errorf(e, "%s%s: %s", key, t.in(), problem)
		c.blank(e.Raw)
	}
}

// valueProblem says why v cannot be decoded into typ, or "" if it can.
func (c *typeChecker) valueProblem(typ reflect.Type, v *unstable.Node) string {
	if isText(typ) {
		if v.Kind != unstable.String {
			return "want a string, not " + kindName(v.Kind)
		}
		if err := reflect.New(typ).Interface().(encoding.TextUnmarshaler).UnmarshalText(v.Data); err != nil {
			return err.Error()
		}
		return ""
	}
	switch typ.Kind() {
	case reflect.String:
		return want(v, "a string", unstable.String)
	case reflect.Bool:
		return want(v, "true or false", unstable.Bool)
	case reflect.Int, reflect.Int64, reflect.Int32:
		return want(v, "an integer", unstable.Integer)
	case reflect.Float64, reflect.Float32:
		return want(v, "a number", unstable.Float, unstable.Integer)
	case reflect.Slice:
		if p := want(v, "a list", unstable.Array); p != "" {
			return p
		}
		return c.elementsProblem(typ.Elem(), v)
	case reflect.Struct:
		if p := want(v, "a table", unstable.InlineTable); p != "" {
			return p
		}
		return c.inlineTableProblem(typ, v)
	}
	return ""
}

func (c *typeChecker) elementsProblem(elem reflect.Type, v *unstable.Node) string {
	it := v.Children()
	for i := 1; it.Next(); i++ {
		if p := c.valueProblem(elem, it.Node()); p != "" {
			return fmt.Sprintf("element %d: %s", i, p)
		}
	}
	return ""
}

func (c *typeChecker) inlineTableProblem(typ reflect.Type, v *unstable.Node) string {
	it := v.Children()
	for it.Next() {
		kv := it.Node()
		keys := nodeKeys(kv)
		ft, ok := fieldType(typ, keys[:len(keys)-1], nil)
		if ok {
			ft, ok = structField(ft, keys[len(keys)-1])
		}
		key := strings.Join(keys, ".")
		if !ok {
			return fmt.Sprintf("unknown key %q", key)
		}
		if p := c.valueProblem(ft, kv.Value()); p != "" {
			return key + ": " + p
		}
	}
	return ""
}

func want(v *unstable.Node, what string, kinds ...unstable.Kind) string {
	for _, k := range kinds {
		if v.Kind == k {
			return ""
		}
	}
	return "want " + what + ", not " + kindName(v.Kind)
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Bool:
		return "true/false"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Array:
		return "a list"
	case unstable.InlineTable:
		return "a table"
	}
	return "a date/time"
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()

func isText(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textUnmarshaler) }

// fieldType follows dotted keys from typ through struct fields; a list of
// tables stands for its last table (arrays counts them, nil when keys
// cannot name one).
func fieldType(typ reflect.Type, keys []string, arrays map[string]int) (reflect.Type, bool) {
	for i, k := range keys {
		ft, ok := structField(typ, k)
		if !ok {
			return nil, false
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			if arrays == nil || arrays[strings.Join(keys[:i+1], ".")] == 0 {
				return nil, false
			}
			ft = ft.Elem()
		}
		typ = ft
	}
	return typ, typ.Kind() == reflect.Struct && !isText(typ)
}

// structField is the type of typ's field tagged toml:"key".
func structField(typ reflect.Type, key string) (reflect.Type, bool) {
	if typ.Kind() != reflect.Struct {
		return nil, false
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("toml"), ","); tag == key && f.IsExported() {
			return f.Type, true
		}
	}
	return nil, false
}

func nodeKeys(e *unstable.Node) []string {
	var keys []string
	it := e.Key()
	for it.Next() {
		keys = append(keys, string(it.Node().Data))
	}
	return keys
}

func (c *typeChecker) errorf(e *unstable.Node, format string, args ...any) {
	r := e.Raw
	if e.Kind != unstable.KeyValue {
		it := e.Key()
		it.Next()
		r = it.Node().Raw
	}
	pos := c.p.Shape(r).Start
	c.errs = append(c.errs, fmt.Errorf("%s:%d:%d: %s", c.path, pos.Line, pos.Column, fmt.Sprintf(format, args...)))
}

// blank overwrites r with spaces, keeping line breaks.
func (c *typeChecker) blank(r unstable.Range) {
	for i := r.Offset; i < r.Offset+r.Length; i++ {
		if b := c.patched[i]; b != '\n' && b != '\r' {
			c.patched[i] = ' '
		}
	}
}

func (c *typeChecker) syntaxError(err error) error {
	perr, ok := err.(*unstable.ParserError)
	if !ok {
		return fmt.Errorf("%s: %w", c.path, err)
	}
	pos := c.p.Shape(c.p.Range(perr.Highlight)).Start
	return fmt.Errorf("%s:%d:%d: syntax error: %s", c.path, pos.Line, pos.Column, perr.Message)
}
