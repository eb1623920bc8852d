package merge_test

import (
	"fmt"

	"github.com/mergefs/mergefs/merge"
)

func ExampleMerge() {
	res, err := merge.Merge(merge.Inputs{
		Base:      []byte(`{"name": "Ann", "visits": 1, "city": "Oslo"}`),
		HasBase:   true,
		Mine:      []byte(`{"name": "Ann", "visits": 2, "city": "Oslo"}`),
		Theirs:    []byte("{\n  \"name\": \"Ann\",\n  \"visits\": 1,\n  \"city\": \"Bergen\"\n}\n"),
		HasTheirs: true,
	}, merge.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s", res.Merged)
	fmt.Println(res.Changed, len(res.Conflicts))
	// Output:
	// {
	//   "name": "Ann",
	//   "visits": 2,
	//   "city": "Bergen"
	// }
	// 1 0
}

// Two requests each appended to a list, added a line to a cart and counted
// a login: nothing is lost.
func ExampleMerge_arraysAndRules() {
	rules, err := merge.ParseRules([]byte(`{"rules": [
		{"records": "users/*.json", "path": "/logins", "strategy": "counter"}
	]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := merge.Merge(merge.Inputs{
		Base:      []byte(`{"tags": ["a"], "cart": [{"id": 1, "qty": 1}], "logins": 5}`),
		HasBase:   true,
		Mine:      []byte(`{"tags": ["a", "mine"], "cart": [{"id": 1, "qty": 2}, {"id": 7, "qty": 1}], "logins": 6}`),
		Theirs:    []byte(`{"tags": ["a", "theirs"], "cart": [{"id": 1, "qty": 1}, {"id": 9, "qty": 3}], "logins": 6}`),
		HasTheirs: true,
	}, merge.Options{Rules: rules, Record: "users/42.json"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s\n", res.Merged)
	fmt.Println(len(res.Conflicts), res.Merges)
	// Output:
	// {"tags": ["a", "theirs", "mine"], "cart": [{"id": 1, "qty": 2}, {"id": 9, "qty": 3}, {"id": 7, "qty": 1}], "logins": 7}
	// 0 map[counter:1 keyed:1 sequence:1]
}
