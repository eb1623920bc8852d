package merge

import (
	"bytes"
	"math/big"
	"strconv"
)

// equal reports whether value a of ta and value b of tb are the same JSON
// value: numbers by exact decimal value, strings after unescaping, object
// keys in any order, whitespace ignored.
func equal(ta *tree, a *value, tb *tree, b *value) bool {
	if a.kind != b.kind {
		return false
	}
	if bytes.Equal(ta.raw(a), tb.raw(b)) {
		return true
	}
	switch a.kind {
	case kindNumber:
		return numbersEqual(ta.raw(a), tb.raw(b))
	case kindString:
		if !a.escaped && !b.escaped {
			return false
		}
		return bytes.Equal(
			appendUnescaped(nil, ta.data[a.start+1:a.end-1]),
			appendUnescaped(nil, tb.data[b.start+1:b.end-1]))
	case kindArray:
		if a.count != b.count {
			return false
		}
		ia, ea := ta.arrayItems(a)
		ib, eb := tb.arrayItems(b)
		for i := range ia {
			if !equal(ea, &ia[i], eb, &ib[i]) {
				return false
			}
		}
		return true
	case kindObject:
		if a.count != b.count {
			return false
		}
		// The sides usually list the same keys in the same order: pair
		// members by position, and sort by key only if that fails.
		for i := range a.count {
			ma, mb := &ta.members[a.first+i], &tb.members[b.first+i]
			if !bytes.Equal(ta.key(ma), tb.key(mb)) {
				break
			}
			if !equal(ta, &ma.value, tb, &mb.value) {
				return false
			}
			if i == a.count-1 {
				return true
			}
		}
		oa, ob := ta.order(a), tb.order(b)
		for i := range oa {
			ma, mb := &ta.members[oa[i]], &tb.members[ob[i]]
			if !bytes.Equal(ta.key(ma), tb.key(mb)) || !equal(ta, &ma.value, tb, &mb.value) {
				return false
			}
		}
		return true
	}
	return true // null, true, false: same kind is same value
}

// numbersEqual compares two validated JSON number lexemes by exact decimal
// value, without converting them.
func numbersEqual(a, b []byte) bool {
	da, db := parseDecimal(a), parseDecimal(b)
	if da.zero() || db.zero() {
		return da.zero() && db.zero()
	}
	if da.neg != db.neg || da.digitCount() != db.digitCount() {
		return false
	}
	for i := range da.digitCount() {
		if da.digit(i) != db.digit(i) {
			return false
		}
	}
	return da.exponent() == db.exponent()
}

// decimal is a number read as [-]0.DIGITS × 10^exp, where DIGITS are the
// significant digits: the digits of intPart then fracPart, without leading
// and trailing zeros. It points into the lexeme; nothing is copied.
type decimal struct {
	neg               bool
	intPart, fracPart []byte // significant digits, split by the decimal point
	shift             int64  // digits before the point, counting from the first significant one
	expNeg            bool
	expDigits         []byte // exponent as written, without sign and leading zeros
}

func (d *decimal) zero() bool      { return len(d.intPart)+len(d.fracPart) == 0 }
func (d *decimal) digitCount() int { return len(d.intPart) + len(d.fracPart) }

func (d *decimal) digit(i int) byte {
	if i < len(d.intPart) {
		return d.intPart[i]
	}
	return d.fracPart[i-len(d.intPart)]
}

// exponent returns exp in decimal; exact even past the range of int64.
func (d *decimal) exponent() string {
	if len(d.expDigits) <= 17 {
		var e int64
		for _, c := range d.expDigits {
			e = e*10 + int64(c-'0')
		}
		if d.expNeg {
			e = -e
		}
		return strconv.FormatInt(e+d.shift, 10)
	}
	e, _ := new(big.Int).SetString(string(d.expDigits), 10)
	if d.expNeg {
		e.Neg(e)
	}
	return e.Add(e, big.NewInt(d.shift)).String()
}

func parseDecimal(s []byte) decimal {
	var d decimal
	if s[0] == '-' {
		d.neg = true
		s = s[1:]
	}
	mantissa, exp := s, []byte(nil)
	if i := bytes.IndexAny(s, "eE"); i >= 0 {
		mantissa, exp = s[:i], s[i+1:]
	}
	intPart, fracPart := mantissa, []byte(nil)
	if i := bytes.IndexByte(mantissa, '.'); i >= 0 {
		intPart, fracPart = mantissa[:i], mantissa[i+1:]
	}
	intPart = bytes.TrimLeft(intPart, "0")
	d.shift = int64(len(intPart))
	if len(intPart) == 0 {
		// 0.000123: the leading zeros of the fraction move the point.
		trimmed := bytes.TrimLeft(fracPart, "0")
		d.shift = -int64(len(fracPart) - len(trimmed))
		fracPart = trimmed
	}
	fracPart = bytes.TrimRight(fracPart, "0")
	if len(fracPart) == 0 {
		intPart = bytes.TrimRight(intPart, "0")
	}
	d.intPart, d.fracPart = intPart, fracPart
	if len(exp) > 0 && (exp[0] == '+' || exp[0] == '-') {
		d.expNeg = exp[0] == '-'
		exp = exp[1:]
	}
	d.expDigits = bytes.TrimLeft(exp, "0")
	return d
}
