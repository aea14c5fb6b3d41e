package config

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// Error is one problem in a config file.
type Error struct {
	// File is the name of the config file.
	File string
	// Line and Column locate the problem, counting from 1; 0 when unknown.
	Line, Column int
	// Field is the path of the offending value, such as
	// "regions[1].backends[0].url"; "" for the file as a whole.
	Field string
	// Msg says what is wrong.
	Msg string
}

// Error formats e as "file:line:col: field: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found; Load/Parse return Errors (as error) when validation fails.
type Errors []*Error

// Error formats the problems one per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, err := range e {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, so errors.As can find an *Error.
func (e Errors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, err := range e {
		errs[i] = err
	}
	return errs
}

// fieldPath names a value in the file by the keys and list indexes leading to
// it from the top.
type fieldPath []pathElem

type pathElem struct {
	key   string
	index int // used when isIndex
	isIdx bool
}

func (p fieldPath) key(k string) fieldPath {
	return append(p[:len(p):len(p)], pathElem{key: k})
}

func (p fieldPath) idx(i int) fieldPath {
	return append(p[:len(p):len(p)], pathElem{index: i, isIdx: true})
}

// String formats p as users read it: regions[1].backends[0].url.
func (p fieldPath) String() string {
	var b strings.Builder
	for _, e := range p {
		switch {
		case e.isIdx:
			fmt.Fprintf(&b, "[%d]", e.index)
		case !plainKey(e.key):
			fmt.Fprintf(&b, "[%s]", strconv.Quote(e.key))
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e.key)
		}
	}
	return b.String()
}

// plainKey reports whether k can be shown after a dot without quoting.
func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// yamlPath converts p to the YAML library's path, which finds its node.
func (p fieldPath) yamlPath() *yaml.Path {
	b := (&yaml.PathBuilder{}).Root()
	for _, e := range p {
		if e.isIdx {
			b = b.Index(uint(e.index))
		} else {
			b = b.Child(e.key)
		}
	}
	return b.Build()
}

// checker collects the problems of one file. Positions come from the YAML
// library: the file's AST is searched by field path.
type checker struct {
	file     string
	ast      *ast.File
	errs     Errors
	reported map[string]bool // field paths that already have an error
}

func newChecker(file string) *checker {
	return &checker{file: file, reported: make(map[string]bool)}
}

// errorf records a problem with the value at p. When p is absent from the
// file, the problem is placed at the nearest enclosing value that is there.
// Only the first problem of each field is kept.
func (c *checker) errorf(p fieldPath, format string, args ...any) {
	c.report(p, false, fmt.Sprintf(format, args...))
}

// keyErrorf records a problem with the key of the mapping entry at p.
func (c *checker) keyErrorf(p fieldPath, format string, args ...any) {
	c.report(p, true, fmt.Sprintf(format, args...))
}

func (c *checker) report(p fieldPath, atKey bool, msg string) {
	field := p.String()
	if c.reported[field] {
		return
	}
	c.reported[field] = true
	line, col := c.position(p, atKey)
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Column: col, Field: field, Msg: msg})
}

// hasErrorWithin reports whether p or a value inside it has an error.
func (c *checker) hasErrorWithin(p fieldPath) bool {
	prefix := p.String()
	for field := range c.reported {
		if rest, ok := strings.CutPrefix(field, prefix); ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
			return true
		}
	}
	return false
}

// add records an error that is already positioned.
func (c *checker) add(e *Error) {
	c.errs = append(c.errs, e)
}

// result returns the problems in file order, or nil.
func (c *checker) result() error {
	if len(c.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(c.errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return c.errs
}

// lookup returns the node at p, or nil when the file has no value there.
func (c *checker) lookup(p fieldPath) ast.Node {
	if c.ast == nil {
		return nil
	}
	n, err := p.yamlPath().FilterFile(c.ast)
	if err != nil {
		return nil
	}
	return n
}

// present reports whether the file gives a value at p.
func (c *checker) present(p fieldPath) bool {
	return c.lookup(p) != nil
}

// position returns the line and column of the value at p (of its key when
// atKey), falling back to the nearest enclosing value present in the file.
func (c *checker) position(p fieldPath, atKey bool) (line, col int) {
	for n := len(p); n >= 0; n-- {
		node := c.lookup(p[:n])
		if node == nil {
			continue
		}
		if atKey && n == len(p) && n > 0 {
			if k := keyOf(c.lookup(p[:n-1]), node); k != nil {
				node = k
			}
		}
		if tk := startToken(node); tk != nil {
			return tk.Position.Line, tk.Position.Column
		}
	}
	return 1, 1
}

// keyOf returns the key node whose value is value in the mapping parent.
func keyOf(parent, value ast.Node) ast.Node {
	var entries []*ast.MappingValueNode
	switch m := parent.(type) {
	case *ast.MappingNode:
		entries = m.Values
	case *ast.MappingValueNode:
		entries = []*ast.MappingValueNode{m}
	}
	for _, e := range entries {
		if e.Value == value {
			return e.Key
		}
	}
	return nil
}

// startToken returns the token where n begins as the user sees it: a block
// mapping begins at its first key.
func startToken(n ast.Node) *token.Token {
	switch m := n.(type) {
	case *ast.MappingNode:
		if !m.IsFlowStyle && len(m.Values) > 0 {
			return m.Values[0].Key.GetToken()
		}
	case *ast.MappingValueNode:
		return m.Key.GetToken()
	}
	return n.GetToken()
}

// keysInOrder returns the keys of the mapping at p in file order.
func (c *checker) keysInOrder(p fieldPath) []string {
	var entries []*ast.MappingValueNode
	switch m := c.lookup(p).(type) {
	case *ast.MappingNode:
		entries = m.Values
	case *ast.MappingValueNode:
		entries = []*ast.MappingValueNode{m}
	}
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		if s, ok := e.Key.(*ast.StringNode); ok {
			keys = append(keys, s.Value)
		} else {
			keys = append(keys, e.Key.GetToken().Value)
		}
	}
	return keys
}
