//go:build race

package merge

func init() { raceEnabled = true }
