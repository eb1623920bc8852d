package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestMakeRecordHasTheSizeAndCountersAsked(t *testing.T) {
	for _, size := range []int{300, 4096, 262144, 1048576} {
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
	digits, ok := findCounter(data, counterField("w3"), len(data))
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
	// A torn read: an empty or cut record is no record, also when the counter is whole in it.
	if _, ok := findCounter(data[:len(`{"id": 0, "name": "Zo\u00eb \u00dcnal", "score": 1.5, "tags": ["a", "b"], "w0": "00`)], counterField("w0"), len(data)); ok {
		t.Fatal("a cut counter was accepted")
	}
	if _, ok := findCounter(data[:len(data)-1], counterField("w0"), len(data)); ok {
		t.Fatal("a record cut after its counters was accepted")
	}
	if _, ok := findCounter(nil, counterField("w0"), len(data)); ok {
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

func TestMakeGroupsLaysOutTheTable(t *testing.T) {
	groups, err := makeGroups("300,4096", "1,4", "1048576", "1,4", 9, 4096, "1,4")
	if err != nil {
		t.Fatal(err)
	}
	want := []group{
		{size: 300, shapes: []shape{{workers: 1}, {workers: 4}, {workers: 4, shared: true}}},
		{size: 4096, shapes: []shape{{workers: 1}, {workers: 4}, {workers: 4, shared: true}, {workers: 1, reads: 9}, {workers: 4, reads: 9}}},
		{size: 1048576, shapes: []shape{{workers: 1}, {workers: 4}}},
	}
	if !reflect.DeepEqual(groups, want) {
		t.Fatalf("groups:\n%+v\nwant\n%+v", groups, want)
	}
	if groups, err = makeGroups("300", "1", "", "1", 0, 4096, "1"); err != nil || len(groups) != 1 || len(groups[0].shapes) != 1 {
		t.Fatalf("without big sizes and read-heavy rows: %+v, %v", groups, err)
	}
	if _, err := makeGroups("300", "1", "x", "1", 0, 4096, "1"); err == nil {
		t.Fatal("a bad -big-sizes was accepted")
	}
}

func TestSpeedTargets(t *testing.T) {
	for _, c := range []struct {
		size  int
		sh    shape
		floor float64
		ok    bool
	}{
		{300, shape{workers: 8, shared: true}, 1, true},
		{4096, shape{workers: 4, reads: 9}, 2, true},
		{262144, shape{workers: 4, shared: true}, 0.8, true},
		{262144, shape{workers: 8}, 0, false},
		{1048576, shape{workers: 4}, 0.7, true},
	} {
		floor, ok := speedTarget(c.size, c.sh)
		if ok != c.ok || ok && floor != c.floor {
			t.Errorf("%d, %v: %v %v, want %v %v", c.size, c.sh, floor, ok, c.floor, c.ok)
		}
	}
}
