package merge

import (
	"bytes"
	"math/big"
	"strconv"
)

// valueRule merges a position that rule r matches, where all three sides
// have a value (bt a stand-in where mine and theirs both added it). A
// change on one side only is taken as it is; the strategy merges changes
// on both.
func (m *merger) valueRule(r *Rule, bt *tree, b, mv, t *value) {
	if !bt.standIn {
		if equal(bt, b, m.mine, mv) {
			return // unchanged by mine: theirs' value stands
		}
		if equal(bt, b, m.theirs, t) {
			m.replace(t, mv) // unchanged by theirs: mine's value
			return
		}
	}
	before := len(m.conflicts)
	switch r.Strategy {
	case StrategyReject:
		reason := reasonBoth
		if bt.standIn {
			reason = reasonAddedBoth
		}
		m.conflict(reason, StrategyReject, bt, b, mv, t)
		m.replace(t, mv)
	case StrategyAtomic:
		m.atomic(bt, b, mv, t, StrategyAtomic)
	case StrategyCounter:
		if bt.standIn {
			bt = standIn("0", kindNumber) // as if both had counted from 0
			b = &bt.root
		}
		if m.counter(bt, b, mv, t) {
			m.merged(StrategyCounter, before)
		}
	case StrategyMax, StrategyMin:
		if m.extreme(r.Strategy, bt, b, mv, t) {
			m.merged(r.Strategy, before)
		}
	case StrategySet, StrategySequence, StrategyKeyed:
		if bt.standIn {
			bt = m.emptyArray()
			b = &bt.root
		}
		if b.kind != kindArray || mv.kind != kindArray || t.kind != kindArray {
			m.conflict(string(r.Strategy)+": not an array", r.Strategy, bt, b, mv, t)
			m.replace(t, mv)
			return
		}
		m.array(bt, b, mv, t, r.Strategy, r.Key)
	}
}

// counter merges numbers as theirs + (mine - base), exactly; false with a
// conflict when they are not all numbers.
func (m *merger) counter(bt *tree, b, mv, t *value) bool {
	if b.kind != kindNumber || mv.kind != kindNumber || t.kind != kindNumber {
		m.conflict("counter: not a number", StrategyCounter, bt, b, mv, t)
		m.replace(t, mv)
		return false
	}
	sum, ok := addDecimals(m.theirs.raw(t), m.mine.raw(mv), bt.raw(b))
	if !ok {
		m.conflict("counter: numbers too far apart in magnitude to add exactly", StrategyCounter, bt, b, mv, t)
		m.replace(t, mv)
		return false
	}
	m.edits = append(m.edits, edit{start: t.start, end: t.end, text: sum})
	m.changed++
	return true
}

// extreme merges by taking the greater (max) or lesser (min) of mine and
// theirs; false with a conflict when they are not two numbers or two
// strings.
func (m *merger) extreme(strategy Strategy, bt *tree, b, mv, t *value) bool {
	var c int
	switch {
	case mv.kind == kindNumber && t.kind == kindNumber:
		c = compareNumbers(m.mine.raw(mv), m.theirs.raw(t))
	case mv.kind == kindString && t.kind == kindString:
		c = bytes.Compare(stringText(m.mine, mv), stringText(m.theirs, t))
	default:
		m.conflict(string(strategy)+": not two numbers or two strings", strategy, bt, b, mv, t)
		m.replace(t, mv)
		return false
	}
	if (strategy == StrategyMax && c > 0) || (strategy == StrategyMin && c < 0) {
		m.replace(t, mv)
	}
	return true
}

// stringText returns the decoded text of string v of t.
func stringText(t *tree, v *value) []byte {
	body := t.data[v.start+1 : v.end-1]
	if !v.escaped {
		return body
	}
	return appendUnescaped(nil, body)
}

// maxExponentSpread bounds how far apart in magnitude counter operands may
// be (in decimal digits): adding 1e-9999 to 1e9999 exactly would need
// 20,000 digits.
const maxExponentSpread = 10_000

// exactNumber is mant × 10^exp.
type exactNumber struct {
	mant *big.Int
	exp  int64
}

// parseExact reads a validated JSON number; false when its exponent is
// out of range.
func parseExact(s []byte) (exactNumber, bool) {
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	mantissa, expPart := s, []byte(nil)
	if i := bytes.IndexAny(s, "eE"); i >= 0 {
		mantissa, expPart = s[:i], s[i+1:]
	}
	var exp int64
	if len(expPart) > 0 {
		e, err := strconv.ParseInt(string(expPart), 10, 64)
		if err != nil || e > 1e9 || e < -1e9 {
			return exactNumber{}, false
		}
		exp = e
	}
	digits := mantissa
	if i := bytes.IndexByte(mantissa, '.'); i >= 0 {
		digits = append(append([]byte(nil), mantissa[:i]...), mantissa[i+1:]...)
		exp -= int64(len(mantissa) - i - 1)
	}
	mant, _ := new(big.Int).SetString(string(digits), 10)
	if neg {
		mant.Neg(mant)
	}
	return exactNumber{mant, exp}, true
}

// addDecimals returns a + b - c, exactly, written with as many decimals as
// the most precise of them. false when they are too far apart in
// magnitude.
func addDecimals(a, b, c []byte) ([]byte, bool) {
	var ns [3]exactNumber
	for i, s := range [3][]byte{a, b, c} {
		n, ok := parseExact(s)
		if !ok {
			return nil, false
		}
		ns[i] = n
	}
	lo, hi := ns[0].exp, ns[0].exp
	for _, n := range ns[1:] {
		lo, hi = min(lo, n.exp), max(hi, n.exp)
	}
	if hi-lo > maxExponentSpread {
		return nil, false
	}
	ten := big.NewInt(10)
	scaled := func(n exactNumber) *big.Int {
		if n.exp == lo {
			return n.mant
		}
		f := new(big.Int).Exp(ten, big.NewInt(n.exp-lo), nil)
		return f.Mul(f, n.mant)
	}
	sum := new(big.Int).Add(scaled(ns[0]), scaled(ns[1]))
	sum.Sub(sum, scaled(ns[2]))
	return formatExact(sum, lo), true
}

// formatExact writes mant × 10^exp as a JSON number: plain decimals when
// that takes few zeros, else with an exponent.
func formatExact(mant *big.Int, exp int64) []byte {
	var out []byte
	if mant.Sign() < 0 {
		out = append(out, '-')
	}
	digits := new(big.Int).Abs(mant).String()
	switch {
	case digits == "0" && exp >= 0:
		return []byte("0")
	case exp >= 0 && exp <= 21:
		out = append(out, digits...)
		return append(out, bytes.Repeat([]byte{'0'}, int(exp))...)
	case exp < 0 && -exp <= 40:
		frac := int(-exp)
		if len(digits) > frac {
			out = append(out, digits[:len(digits)-frac]...)
			out = append(out, '.')
			return append(out, digits[len(digits)-frac:]...)
		}
		out = append(out, "0."...)
		out = append(out, bytes.Repeat([]byte{'0'}, frac-len(digits))...)
		return append(out, digits...)
	}
	out = append(out, digits...)
	out = append(out, 'e')
	return strconv.AppendInt(out, exp, 10)
}

// compareNumbers compares two validated JSON numbers by exact value.
func compareNumbers(a, b []byte) int {
	da, db := parseDecimal(a), parseDecimal(b)
	sign := func(d *decimal) int {
		switch {
		case d.zero():
			return 0
		case d.neg:
			return -1
		}
		return 1
	}
	sa, sb := sign(&da), sign(&db)
	if sa != sb || sa == 0 {
		return cmpInt(sa, sb)
	}
	// Same sign, both non-zero: 0.DIGITS × 10^exponent.
	ea, _ := new(big.Int).SetString(da.exponent(), 10)
	eb, _ := new(big.Int).SetString(db.exponent(), 10)
	c := ea.Cmp(eb)
	if c == 0 {
		for i := 0; c == 0 && (i < da.digitCount() || i < db.digitCount()); i++ {
			var x, y byte = '0', '0'
			if i < da.digitCount() {
				x = da.digit(i)
			}
			if i < db.digitCount() {
				y = db.digit(i)
			}
			c = cmpInt(int(x), int(y))
		}
	}
	return c * sa
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
