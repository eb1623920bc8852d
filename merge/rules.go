package merge

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Strategy is how a position is merged when both mine and theirs changed
// it (a change on one side only is always taken as it is).
type Strategy string

const (
	// StrategyCounter merges numbers as deltas: theirs + (mine - base), in
	// exact decimal arithmetic.
	StrategyCounter Strategy = "counter"
	// StrategyMax and StrategyMin take the greater or lesser of mine and
	// theirs: numbers by value, strings by their bytes (so that ISO-8601
	// timestamps compare as times).
	StrategyMax Strategy = "max"
	StrategyMin Strategy = "min"
	// StrategySet merges an array as a set of JSON values: theirs, without
	// what mine removed, then what mine added.
	StrategySet Strategy = "set"
	// StrategyKeyed merges an array of objects by the value of a key
	// (Rule.Key), each element as an object.
	StrategyKeyed Strategy = "keyed"
	// StrategySequence merges an array by element, as a 3-way diff of its
	// elements; the default for arrays (which are merged as keyed when
	// every element has an identity: see the package comment).
	StrategySequence Strategy = "sequence"
	// StrategyAtomic merges a value as one value, objects and arrays too.
	StrategyAtomic Strategy = "atomic"
	// StrategyReject makes any concurrent change a conflict that fails
	// the merge (ErrRejected), whatever the policy.
	StrategyReject Strategy = "reject"
)

var strategies = []Strategy{StrategyCounter, StrategyMax, StrategyMin, StrategySet, StrategyKeyed,
	StrategySequence, StrategyAtomic, StrategyReject}

// Strategies returns every strategy, in a fixed order.
func Strategies() []Strategy { return append([]Strategy(nil), strategies...) }

// Rule says which strategy merges the positions that Path matches in the
// records that Records matches.
type Rule struct {
	// Records is a glob (path.Match) on the record's path relative to the
	// mount; "" matches every record.
	Records string `json:"records,omitempty"`
	// Path is a JSON Pointer (RFC 6901) in which a step that is exactly
	// "*" matches any one key or array index; "" is the whole document.
	// A step in digits matches a key so spelled or that array index.
	Path     string   `json:"path"`
	Strategy Strategy `json:"strategy"`
	// Key names the identity member of StrategyKeyed's elements.
	Key string `json:"key,omitempty"`

	steps []string // Path's decoded steps
	wild  []bool   // steps that are "*"
}

// Rules is a parsed, valid rules file. The first rule that matches a
// position applies.
type Rules struct {
	list []*Rule
}

// List returns a copy of the rules in order.
func (r *Rules) List() []Rule {
	out := make([]Rule, len(r.list))
	for i, x := range r.list {
		out[i] = *x
	}
	return out
}

// Match returns the rule for the position pointer (a JSON Pointer, as
// Conflict.Pointer writes it) of the record named record, if any.
func (r *Rules) Match(record, pointer string) (Rule, bool) {
	steps, err := parsePointer(pointer)
	if err != nil {
		return Rule{}, false
	}
	for _, x := range r.forRecord(record) {
		if len(x.steps) != len(steps) {
			continue
		}
		ok := true
		for i, s := range steps {
			if !x.wild[i] && x.steps[i] != s {
				ok = false
				break
			}
		}
		if ok {
			return *x, true
		}
	}
	return Rule{}, false
}

// forRecord returns the rules whose records glob matches record, or nil.
func (r *Rules) forRecord(record string) []*Rule {
	var out []*Rule
	for _, x := range r.list {
		if x.Records == "" {
			out = append(out, x)
		} else if ok, _ := path.Match(x.Records, record); ok {
			out = append(out, x)
		}
	}
	return out
}

// strategy returns the rule's strategy; "" for no rule.
func (r *Rule) strategy() Strategy {
	if r == nil {
		return ""
	}
	return r.Strategy
}

// lookup returns the first rule matching m.path, or nil.
func (m *merger) lookup() *Rule {
	if len(m.path) > m.maxRule {
		return nil
	}
	var digits [20]byte
	for _, r := range m.rules {
		if len(r.steps) != len(m.path) {
			continue
		}
		ok := true
		for i := len(m.path) - 1; i >= 0 && ok; i-- {
			if r.wild[i] {
				continue
			}
			s := m.path[i]
			if s.index >= 0 {
				ok = string(strconv.AppendInt(digits[:0], int64(s.index), 10)) == r.steps[i]
			} else {
				ok = string(s.key) == r.steps[i]
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// setRules sets the rules that apply to the merge.
func (m *merger) setRules(rules []*Rule) {
	m.rules = rules
	for _, r := range rules {
		m.maxRule = max(m.maxRule, len(r.steps))
	}
}

// ParseRules parses and validates a rules file:
//
//	{"rules": [
//	  {"records": "users/*.json", "path": "/login_count", "strategy": "counter"},
//	  {"path": "/cart/items", "strategy": "keyed", "key": "sku"}
//	]}
//
// An error names the rule (by its index in the list) and the field.
func ParseRules(data []byte) (*Rules, error) {
	if _, serr := parse(data, DefaultMaxDepth); serr != nil {
		return nil, fmt.Errorf("rules: not valid JSON: %s (at byte %d)", serr.reason, serr.offset)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf(`rules: want an object {"rules": [...]}`)
	}
	for k := range top {
		if k != "rules" {
			return nil, fmt.Errorf("rules: unknown field %q (want \"rules\")", k)
		}
	}
	raw, ok := top["rules"]
	if !ok {
		return nil, fmt.Errorf(`rules: missing field "rules"`)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, fmt.Errorf(`rules: "rules" must be an array of rules`)
	}
	rs := &Rules{}
	for i, item := range list {
		r, err := parseRule(item)
		if err != nil {
			return nil, fmt.Errorf("rules[%d]%s", i, err)
		}
		rs.list = append(rs.list, r)
	}
	return rs, nil
}

// parseRule parses one rule; an error starts with ".field: " or ": ".
func parseRule(data []byte) (*Rule, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf(": a rule must be an object")
	}
	str := func(name string) (string, bool, error) {
		raw, ok := fields[name]
		if !ok {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", true, fmt.Errorf(".%s: must be a string", name)
		}
		return s, true, nil
	}
	for k := range fields {
		switch k {
		case "records", "path", "strategy", "key":
		default:
			return nil, fmt.Errorf(": unknown field %q (want records, path, strategy, key)", k)
		}
	}
	r := &Rule{}
	var err error
	var has bool
	if r.Records, _, err = str("records"); err != nil {
		return nil, err
	}
	if _, perr := path.Match(r.Records, ""); perr != nil {
		return nil, fmt.Errorf(".records: bad glob %q: %v", r.Records, perr)
	}
	if r.Path, has, err = str("path"); err != nil {
		return nil, err
	} else if !has {
		return nil, fmt.Errorf(`.path: missing (a JSON Pointer such as "/tags"; "" is the whole document)`)
	}
	if r.steps, err = parsePointer(r.Path); err != nil {
		return nil, fmt.Errorf(".path: %v", err)
	}
	r.wild = make([]bool, len(r.steps))
	for i, s := range r.steps {
		r.wild[i] = s == "*"
	}
	var name string
	if name, has, err = str("strategy"); err != nil {
		return nil, err
	} else if !has {
		return nil, fmt.Errorf(".strategy: missing (want one of %s)", strategyNames())
	}
	r.Strategy = Strategy(name)
	known := false
	for _, s := range strategies {
		known = known || s == r.Strategy
	}
	if !known {
		return nil, fmt.Errorf(".strategy: unknown strategy %q (want one of %s)", name, strategyNames())
	}
	if r.Key, has, err = str("key"); err != nil {
		return nil, err
	}
	switch {
	case r.Strategy == StrategyKeyed && r.Key == "":
		return nil, fmt.Errorf(`.key: strategy "keyed" needs a non-empty key (the identity member of the elements)`)
	case r.Strategy != StrategyKeyed && has:
		return nil, fmt.Errorf(".key: only strategy \"keyed\" takes a key, not %q", r.Strategy)
	}
	return r, nil
}

func strategyNames() string {
	names := make([]string, len(strategies))
	for i, s := range strategies {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// parsePointer decodes a JSON Pointer into its steps.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("%q is not a JSON Pointer: it must be empty or start with '/'", p)
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		if !strings.Contains(s, "~") {
			continue
		}
		var b strings.Builder
		for j := 0; j < len(s); j++ {
			if s[j] != '~' {
				b.WriteByte(s[j])
				continue
			}
			if j+1 < len(s) && (s[j+1] == '0' || s[j+1] == '1') {
				b.WriteByte("~/"[s[j+1]-'0'])
				j++
				continue
			}
			return nil, fmt.Errorf("%q: '~' must be followed by 0 or 1", p)
		}
		parts[i] = b.String()
	}
	return parts, nil
}
