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
