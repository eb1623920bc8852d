package merge

import (
	"bytes"
	"fmt"
	"slices"
	"unicode/utf8"
)

// kind is the JSON type of a value.
type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindArray
	kindObject
)

// node is one JSON value of a parsed document.
type node struct {
	kind    kind
	escaped bool  // string whose raw text contains backslash escapes
	start   int32 // offset of the first byte of the value
	end     int32 // offset just past the last byte of the value
	first   int32 // object: index into tree.members/tree.sorted; array: index into tree.items
	count   int32 // object: number of members; array: number of elements
}

// member is one key/value pair of an object.
type member struct {
	keyStart int32 // offset of the key's opening quote
	keyEnd   int32 // offset just past the key's closing quote
	keyOff   int32 // decoded key: in tree.keys if escaped, else in tree.data
	keyLen   int32
	escaped  bool
	value    int32 // node index
}

// tree is a validated document with every value's byte span, so that the
// merge can compare values and splice edits into the original bytes.
// Members of one object are contiguous in document order; sorted holds, for
// the same range, the member indices ordered by decoded key.
type tree struct {
	data    []byte
	nodes   []node
	members []member
	sorted  []int32
	items   []int32
	keys    []byte // decoded text of keys that contain escapes
}

func (t *tree) key(m *member) []byte {
	if m.escaped {
		return t.keys[m.keyOff : m.keyOff+m.keyLen]
	}
	return t.data[m.keyOff : m.keyOff+m.keyLen]
}

func (t *tree) raw(n int32) []byte {
	nd := &t.nodes[n]
	return t.data[nd.start:nd.end]
}

// sortedIndex returns the index in t.members of the i-th member of object n
// in key order.
func (t *tree) sortedIndex(n int32, i int32) int32 {
	return t.sorted[t.nodes[n].first+i]
}

// syntaxError is a parse failure; the caller turns it into an *InputError.
type syntaxError struct {
	reason string
	offset int
}

// parser is a validating recursive-descent JSON parser. Recursion is bounded
// by maxDepth, which is checked before descending.
type parser struct {
	t        *tree
	data     []byte
	pos      int
	maxDepth int
	err      *syntaxError
	// Members and elements of the containers being parsed; a finished
	// container moves its own to the tree so that they end up contiguous.
	memberStack []member
	itemStack   []int32
}

// parse validates data as exactly one JSON document (RFC 8259, UTF-8,
// no duplicate keys) and returns its tree.
func parse(data []byte, maxDepth int) (*tree, *syntaxError) {
	// Capacity guesses from typical documents: about one value per 8 bytes.
	guess := len(data)/8 + 4
	t := &tree{
		data:  data,
		nodes: make([]node, 0, guess),
	}
	p := &parser{t: t, data: data, maxDepth: maxDepth}
	p.skipSpace()
	if p.pos == len(data) {
		if len(data) == 0 {
			return nil, &syntaxError{"empty document", 0}
		}
		return nil, &syntaxError{"document is only whitespace", p.pos}
	}
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		return nil, &syntaxError{"byte order mark before the document", 0}
	}
	p.value(0)
	if p.err != nil {
		return nil, p.err
	}
	p.skipSpace()
	if p.pos != len(data) {
		return nil, &syntaxError{"extra data after the document", p.pos}
	}
	return t, nil
}

func (p *parser) fail(offset int, format string, args ...any) {
	if p.err == nil {
		p.err = &syntaxError{fmt.Sprintf(format, args...), offset}
	}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) unexpected(what string) {
	if p.pos >= len(p.data) {
		p.fail(p.pos, "unexpected end of input, expected %s", what)
		return
	}
	p.fail(p.pos, "unexpected %s, expected %s", quoteByte(p.data[p.pos]), what)
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// value parses one value at p.pos (which must not be whitespace) and returns
// its node index. depth is the number of containers around it.
func (p *parser) value(depth int) int32 {
	if p.pos >= len(p.data) {
		p.unexpected("a value")
		return -1
	}
	idx := int32(len(p.t.nodes))
	start := p.pos
	switch c := p.data[p.pos]; {
	case c == '{':
		p.t.nodes = append(p.t.nodes, node{kind: kindObject, start: int32(start)})
		p.object(idx, depth+1)
	case c == '[':
		p.t.nodes = append(p.t.nodes, node{kind: kindArray, start: int32(start)})
		p.array(idx, depth+1)
	case c == '"':
		escaped := p.str()
		p.t.nodes = append(p.t.nodes, node{kind: kindString, escaped: escaped, start: int32(start), end: int32(p.pos)})
	case c == '-' || (c >= '0' && c <= '9'):
		p.number()
		p.t.nodes = append(p.t.nodes, node{kind: kindNumber, start: int32(start), end: int32(p.pos)})
	case c == 't':
		p.literal("true")
		p.t.nodes = append(p.t.nodes, node{kind: kindTrue, start: int32(start), end: int32(p.pos)})
	case c == 'f':
		p.literal("false")
		p.t.nodes = append(p.t.nodes, node{kind: kindFalse, start: int32(start), end: int32(p.pos)})
	case c == 'n':
		p.literal("null")
		p.t.nodes = append(p.t.nodes, node{kind: kindNull, start: int32(start), end: int32(p.pos)})
	default:
		p.unexpected("a value")
	}
	return idx
}

func (p *parser) literal(word string) {
	if len(p.data)-p.pos >= len(word) && string(p.data[p.pos:p.pos+len(word)]) == word {
		p.pos += len(word)
		return
	}
	p.fail(p.pos, "invalid literal, expected %s", word)
}

func (p *parser) object(idx int32, depth int) {
	if depth > p.maxDepth {
		p.fail(p.pos, "nesting deeper than max depth %d", p.maxDepth)
		return
	}
	p.pos++ // '{'
	base := len(p.memberStack)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
	} else {
		for p.err == nil {
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				if p.pos < len(p.data) && p.data[p.pos] == '}' && len(p.memberStack) > base {
					p.fail(p.pos, "trailing comma in object")
				} else {
					p.unexpected("a string key")
				}
				break
			}
			m := member{keyStart: int32(p.pos)}
			m.escaped = p.str()
			if p.err != nil {
				break
			}
			m.keyEnd = int32(p.pos)
			if m.escaped {
				off := len(p.t.keys)
				p.t.keys = appendUnescaped(p.t.keys, p.data[m.keyStart+1:m.keyEnd-1])
				m.keyOff, m.keyLen = int32(off), int32(len(p.t.keys)-off)
			} else {
				m.keyOff, m.keyLen = m.keyStart+1, m.keyEnd-m.keyStart-2
			}
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				p.unexpected("':' after object key")
				break
			}
			p.pos++
			p.skipSpace()
			m.value = p.value(depth)
			if p.err != nil {
				break
			}
			p.memberStack = append(p.memberStack, m)
			p.skipSpace()
			if p.pos < len(p.data) && p.data[p.pos] == ',' {
				p.pos++
				p.skipSpace()
				continue
			}
			if p.pos < len(p.data) && p.data[p.pos] == '}' {
				p.pos++
				break
			}
			p.unexpected("',' or '}' in object")
		}
	}
	if p.err != nil {
		p.memberStack = p.memberStack[:base]
		return
	}
	t := p.t
	first := int32(len(t.members))
	t.members = append(t.members, p.memberStack[base:]...)
	p.memberStack = p.memberStack[:base]
	n := int32(len(t.members)) - first
	for i := first; i < first+n; i++ {
		t.sorted = append(t.sorted, i)
	}
	order := t.sorted[first : first+n]
	slices.SortFunc(order, func(a, b int32) int {
		return bytes.Compare(t.key(&t.members[a]), t.key(&t.members[b]))
	})
	for i := 1; i < len(order); i++ {
		prev, cur := &t.members[order[i-1]], &t.members[order[i]]
		if bytes.Equal(t.key(prev), t.key(cur)) {
			dup := max(prev.keyStart, cur.keyStart)
			p.fail(int(dup), "duplicate key %q", t.key(cur))
			return
		}
	}
	nd := &t.nodes[idx]
	nd.end, nd.first, nd.count = int32(p.pos), first, n
}

func (p *parser) array(idx int32, depth int) {
	if depth > p.maxDepth {
		p.fail(p.pos, "nesting deeper than max depth %d", p.maxDepth)
		return
	}
	p.pos++ // '['
	base := len(p.itemStack)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
	} else {
		for p.err == nil {
			if p.pos < len(p.data) && p.data[p.pos] == ']' && len(p.itemStack) > base {
				p.fail(p.pos, "trailing comma in array")
				break
			}
			v := p.value(depth)
			if p.err != nil {
				break
			}
			p.itemStack = append(p.itemStack, v)
			p.skipSpace()
			if p.pos < len(p.data) && p.data[p.pos] == ',' {
				p.pos++
				p.skipSpace()
				continue
			}
			if p.pos < len(p.data) && p.data[p.pos] == ']' {
				p.pos++
				break
			}
			p.unexpected("',' or ']' in array")
		}
	}
	if p.err != nil {
		p.itemStack = p.itemStack[:base]
		return
	}
	t := p.t
	first := int32(len(t.items))
	t.items = append(t.items, p.itemStack[base:]...)
	p.itemStack = p.itemStack[:base]
	nd := &t.nodes[idx]
	nd.end, nd.first, nd.count = int32(p.pos), first, int32(len(t.items))-first
}

// plainString marks the bytes that end the fast path of string scanning.
var plainString = func() (tbl [256]bool) {
	for c := 0; c < 256; c++ {
		tbl[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
	}
	return tbl
}()

// str scans a string starting at its opening quote and reports whether it
// contains escapes.
func (p *parser) str() (escaped bool) {
	data := p.data
	i := p.pos + 1
	for {
		for i < len(data) && plainString[data[i]] {
			i++
		}
		if i >= len(data) {
			p.pos = i
			p.fail(i, "unexpected end of input in string")
			return escaped
		}
		switch c := data[i]; {
		case c == '"':
			p.pos = i + 1
			return escaped
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				p.fail(i, "unexpected end of input in string escape")
				return escaped
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(data) {
					p.fail(i, "unexpected end of input in \\u escape")
					return escaped
				}
				for _, h := range data[i+2 : i+6] {
					if hexValue(h) < 0 {
						p.fail(i, "invalid \\u escape")
						return escaped
					}
				}
				i += 6
			default:
				p.fail(i, "invalid escape %s in string", quoteByte(data[i+1]))
				return escaped
			}
		case c < 0x20:
			p.fail(i, "control character %s in string", quoteByte(c))
			return escaped
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				p.fail(i, "invalid UTF-8 in string")
				return escaped
			}
			i += size
		}
	}
}

func (p *parser) number() {
	data := p.data
	i := p.pos
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	default:
		p.pos = i
		p.unexpected("a digit")
		return
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			p.pos = i
			p.unexpected("a digit after the decimal point")
			return
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			p.pos = i
			p.unexpected("a digit in the exponent")
			return
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	p.pos = i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func hexValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// appendUnescaped appends the decoded text of a validated string body (the
// bytes between the quotes). A lone UTF-16 surrogate from a \u escape is
// kept as its own code unit (WTF-8) rather than replaced, so that "\ud800"
// and "\ufffd" stay different, as they are in Python.
func appendUnescaped(dst, body []byte) []byte {
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			j := i + 1
			for j < len(body) && body[j] != '\\' {
				j++
			}
			dst = append(dst, body[i:j]...)
			i = j
			continue
		}
		switch body[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(body[i+2:])
			i += 6
			if r >= 0xD800 && r < 0xDC00 && i+6 <= len(body) && body[i] == '\\' && body[i+1] == 'u' {
				if lo := hex4(body[i+2:]); lo >= 0xDC00 && lo < 0xE000 {
					dst = utf8.AppendRune(dst, 0x10000+(r-0xD800)<<10+(lo-0xDC00))
					i += 6
					continue
				}
			}
			if r >= 0xD800 && r < 0xE000 {
				dst = append(dst, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
			} else {
				dst = utf8.AppendRune(dst, r)
			}
			continue
		default: // '"', '\\', '/'
			dst = append(dst, body[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	return rune(hexValue(b[0])<<12 | hexValue(b[1])<<8 | hexValue(b[2])<<4 | hexValue(b[3]))
}
