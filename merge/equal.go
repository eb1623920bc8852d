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
		ea, eb := ta.elements(a), tb.elements(b)
		for i := range ea.items {
			if !equal(ea, &ea.items[i], eb, &eb.items[i]) {
				return false
			}
		}
		return true
	case kindObject:
		if a.count != b.count {
			return false
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

// decimal is a number in the form [-]0.digits × 10^exp with no leading or
// trailing zeros in digits; zero has no digits and no sign.
type decimal struct {
	neg    bool
	digits []byte
	exp    string // decimal exponent, exact even when it does not fit an int64
}

func numbersEqual(a, b []byte) bool {
	da, db := parseDecimal(a), parseDecimal(b)
	return da.neg == db.neg && bytes.Equal(da.digits, db.digits) && da.exp == db.exp
}

// parseDecimal normalizes a validated JSON number lexeme.
func parseDecimal(s []byte) decimal {
	var d decimal
	if s[0] == '-' {
		d.neg = true
		s = s[1:]
	}
	mantEnd := len(s)
	expText := []byte(nil)
	if i := bytes.IndexAny(s, "eE"); i >= 0 {
		mantEnd, expText = i, s[i+1:]
	}
	intPart, fracPart := s[:mantEnd], []byte(nil)
	if i := bytes.IndexByte(intPart, '.'); i >= 0 {
		intPart, fracPart = intPart[:i], intPart[i+1:]
	}
	digits := make([]byte, 0, len(intPart)+len(fracPart))
	digits = append(append(digits, intPart...), fracPart...)
	lead := 0
	for lead < len(digits) && digits[lead] == '0' {
		lead++
	}
	digits = digits[lead:]
	trail := len(digits)
	for trail > 0 && digits[trail-1] == '0' {
		trail--
	}
	digits = digits[:trail]
	if len(digits) == 0 {
		return decimal{exp: "0"}
	}
	d.digits = digits
	// value = 0.digits × 10^(len(intPart) - lead + exponent)
	shift := int64(len(intPart) - lead)
	expNeg := false
	if len(expText) > 0 && (expText[0] == '+' || expText[0] == '-') {
		expNeg = expText[0] == '-'
		expText = expText[1:]
	}
	expText = bytes.TrimLeft(expText, "0")
	if len(expText) <= 17 {
		var e int64
		for _, c := range expText {
			e = e*10 + int64(c-'0')
		}
		if expNeg {
			e = -e
		}
		d.exp = strconv.FormatInt(e+shift, 10)
		return d
	}
	e, _ := new(big.Int).SetString(string(expText), 10)
	if expNeg {
		e.Neg(e)
	}
	d.exp = e.Add(e, big.NewInt(shift)).String()
	return d
}
