package main

import (
	"encoding/json"
	"testing"
)

func TestMakeRecordHasTheSizeAndCountersAsked(t *testing.T) {
	for _, size := range []int{300, 4096, 262144} {
		data := makeRecord(3, size, 8)
		if len(data) != size {
			t.Errorf("size %d: got %d bytes", size, len(data))
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("size %d: not JSON: %v", size, err)
		}
		for _, key := range []string{"w0", "w7"} {
			if v, valid := counterValue(data, key); v != 0 || !valid {
				t.Errorf("size %d: counter %s = %d (valid %t)", size, key, v, valid)
			}
		}
	}
}

func TestIncrementAndFindCounter(t *testing.T) {
	data := makeRecord(0, 300, 8)
	digits, ok := findCounter(data, counterField("w3"))
	if !ok {
		t.Fatal("w3 not found")
	}
	for range 12 {
		increment(digits)
	}
	if v, valid := counterValue(data, "w3"); v != 12 || !valid {
		t.Fatalf("w3 = %d after 12 increments (valid %t)", v, valid)
	}
	if v, _ := counterValue(data, "w2"); v != 0 {
		t.Fatalf("w2 changed to %d", v)
	}
	// A torn read: an empty or cut record has no complete counter.
	if _, ok := findCounter(data[:len(`{"id": 0, "name": "Zo\u00eb \u00dcnal", "score": 1.5, "tags": ["a", "b"], "w0": "00`)], counterField("w0")); ok {
		t.Fatal("a cut counter was accepted")
	}
	if _, ok := findCounter(nil, counterField("w0")); ok {
		t.Fatal("an empty record has a counter")
	}
}

func TestCounterValueOfDamagedRecord(t *testing.T) {
	data := append(makeRecord(0, 300, 8), `ra"}`...) // a longer old tail behind a new body
	v, valid := counterValue(data, "w1")
	if valid || v != 0 {
		t.Fatalf("damaged record: value %d valid %t", v, valid)
	}
}
