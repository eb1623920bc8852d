package merge

import (
	"bytes"
	"encoding/json"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// This file holds an independent notion of JSON equality, built on
// encoding/json, to check the package's own against.

// hugeExponent finds exponents that big.Rat would need too much memory for.
var hugeExponent = regexp.MustCompile(`[eE][+-]?0*[0-9]{4,}`)

// oracleEqual decodes a and b with encoding/json (UseNumber) and compares
// the values, numbers as exact rationals. ok is false when the oracle cannot
// judge: invalid input, huge exponents, or U+FFFD in a decoded string
// (encoding/json turns lone surrogates into U+FFFD; Python and this package
// keep them apart).
func oracleEqual(a, b []byte) (eq, ok bool) {
	va, oka := oracleDecode(a)
	vb, okb := oracleDecode(b)
	if !oka || !okb {
		return false, false
	}
	return oracleValuesEqual(va, vb), true
}

func oracleDecode(data []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, false // more than one document
	}
	if hasReplacementChar(v) || hasHugeExponent(v) {
		return nil, false
	}
	return v, true
}

// hasHugeExponent reports whether a number in v has an exponent hugeExponent finds. Numbers are
// looked at decoded: the same bytes inside a string ("\u003e0000") are no exponent.
func hasHugeExponent(v any) bool {
	switch v := v.(type) {
	case json.Number:
		return hugeExponent.MatchString(string(v))
	case []any:
		return slices.ContainsFunc(v, hasHugeExponent)
	case map[string]any:
		for _, x := range v {
			if hasHugeExponent(x) {
				return true
			}
		}
	}
	return false
}

func oracleValuesEqual(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, va := range a {
			vb, ok := b[k]
			if !ok || !oracleValuesEqual(va, vb) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !oracleValuesEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ra, oka := new(big.Rat).SetString(string(a))
		rb, okb := new(big.Rat).SetString(string(b))
		return oka && okb && ra.Cmp(rb) == 0
	default: // string, bool, nil
		return a == b
	}
}

func hasReplacementChar(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, utf8.RuneError)
	case []any:
		for _, x := range v {
			if hasReplacementChar(x) {
				return true
			}
		}
	case map[string]any:
		for k, x := range v {
			if strings.ContainsRune(k, utf8.RuneError) || hasReplacementChar(x) {
				return true
			}
		}
	}
	return false
}

// equalDocs compares two parsed documents with the package's equality.
func equalDocs(a, b *tree) bool {
	return equal(a, &a.root, b, &b.root)
}
