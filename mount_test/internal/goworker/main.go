// Command goworker is the Go read-modify-write worker of the runtime tests
// (mount_test/runtimes_test.go, issue 10): goroutines that each own one field
// ("p<proc>t<task>") of the shared records and increment it by reading the
// whole record and writing the whole record back, the way a Go API server's
// handlers do. Nothing here knows about mergefs.
//
// Patterns (-pattern):
//
//	writefile  os.ReadFile, then os.WriteFile
//	rename     os.ReadFile, then a temporary file in the record's directory
//	           (os.CreateTemp, write, close) renamed over the record
//
// Lockstep (-mode lockstep): every goroutine reads, all goroutines of all
// processes meet at a barrier, every goroutine writes, barrier again;
// goroutine g (proc*tasks+task) uses record (iteration+g) % records. The
// barrier across processes goes through the test: "B" on stdout when every
// goroutine of this process arrived, then wait for "G" on stdin. Free (-mode
// free): no barriers, random records.
//
// Prints "R <json summary>" on stdout at the end.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"
)

type config struct {
	dir, pattern, mode               string
	proc, tasks, records, iterations int
	seed                             uint64
}

// summary is what the test reads from the "R" line.
type summary struct {
	Commits    map[string]map[string]int `json:"commits"`
	Attempts   int                       `json:"attempts"`
	Torn       int                       `json:"torn"`
	Unreadable int                       `json:"unreadable"`
	OSErrors   int                       `json:"oserrors"`
	Errors     []string                  `json:"errors"`
	Samples    []string                  `json:"samples"`
	Elapsed    float64                   `json:"elapsed"`
}

type stats struct {
	mu sync.Mutex
	summary
}

func (s *stats) add(f func(*summary)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.summary)
}

func (s *stats) sample(format string, args ...any) {
	s.add(func(sum *summary) {
		if len(sum.Samples) < 10 {
			sum.Samples = append(sum.Samples, fmt.Sprintf(format, args...))
		}
	})
}

// coordinator is the barrier across processes: one "B" out, one "G" in.
type coordinator struct {
	in *bufio.Reader
}

func (c *coordinator) sync() error {
	if _, err := os.Stdout.WriteString("B\n"); err != nil {
		return err
	}
	line, err := c.in.ReadString('\n')
	if err != nil {
		return fmt.Errorf("at the barrier: %w", err)
	}
	if line != "G\n" {
		return fmt.Errorf("the test answered %q at the barrier", line)
	}
	return nil
}

// barrier is a cyclic barrier of n goroutines whose last arrival meets the
// other processes (coordinator.sync) before it releases the others.
type barrier struct {
	mu     sync.Mutex
	cond   *sync.Cond
	n      int
	count  int
	gen    int
	broken error
	coord  *coordinator
}

func newBarrier(n int, coord *coordinator) *barrier {
	b := &barrier{n: n, coord: coord}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *barrier) wait() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken != nil {
		return b.broken
	}
	gen := b.gen
	b.count++
	if b.count == b.n {
		b.count = 0
		if err := b.coord.sync(); err != nil {
			b.broken = err
		}
		b.gen++
		b.cond.Broadcast()
		return b.broken
	}
	for gen == b.gen && b.broken == nil {
		b.cond.Wait()
	}
	return b.broken
}

// abort breaks the barrier: a goroutine failed, and the others would wait for
// it forever.
func (b *barrier) abort(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken == nil {
		b.broken = err
	}
	b.cond.Broadcast()
}

func decode(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the record")
	}
	if _, ok := obj["id"]; !ok {
		return nil, errors.New("not a record")
	}
	return obj, nil
}

// readRecord reads until the record decodes, counting torn reads; nil if it
// never does.
func readRecord(path string, st *stats) map[string]any {
	var lastBad []byte
	sameBad := 0
	for attempt := 1; attempt <= 60; attempt++ {
		data, err := os.ReadFile(path)
		if err != nil {
			st.add(func(s *summary) { s.OSErrors++ })
			st.sample("read: %v", err)
		} else if obj, err := decode(data); err == nil {
			return obj
		} else {
			st.add(func(s *summary) { s.Torn++ })
			if bytes.Equal(data, lastBad) {
				if sameBad++; sameBad >= 4 {
					break
				}
			} else {
				lastBad, sameBad = data, 1
			}
		}
		time.Sleep(time.Duration(min(attempt, 5)) * time.Millisecond)
	}
	st.add(func(s *summary) { s.Unreadable++ })
	return nil
}

func writeRecord(cfg config, path string, data []byte) error {
	if cfg.pattern == "writefile" {
		return os.WriteFile(path, data, 0o644)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".goworker-*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func bump(obj map[string]any, field string) error {
	var n int64
	if v, ok := obj[field]; ok {
		num, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("field %s is %T, not a number", field, v)
		}
		var err error
		if n, err = num.Int64(); err != nil {
			return err
		}
	}
	obj[field] = n + 1
	return nil
}

func task(cfg config, t int, b *barrier, st *stats) error {
	g := cfg.proc*cfg.tasks + t
	field := fmt.Sprintf("p%dt%d", cfg.proc, t)
	rnd := rand.New(rand.NewPCG(cfg.seed, uint64(g)))
	for it := range cfg.iterations {
		rec := rnd.IntN(cfg.records)
		if b != nil {
			rec = (it + g) % cfg.records
		}
		name := fmt.Sprintf("r%d.json", rec)
		path := filepath.Join(cfg.dir, name)
		obj := readRecord(path, st)
		if b != nil {
			if err := b.wait(); err != nil {
				return err
			}
		}
		if obj != nil {
			if err := bump(obj, field); err != nil {
				return err
			}
			data, err := json.Marshal(obj)
			if err != nil {
				return err
			}
			st.add(func(s *summary) { s.Attempts++ })
			if err := writeRecord(cfg, path, data); err != nil {
				st.add(func(s *summary) { s.OSErrors++ })
				st.sample("write %s: %v", cfg.pattern, err)
			} else {
				st.add(func(s *summary) {
					if s.Commits[name] == nil {
						s.Commits[name] = map[string]int{}
					}
					s.Commits[name][field]++
				})
			}
		}
		if b != nil {
			if err := b.wait(); err != nil {
				return err
			}
		}
	}
	return nil
}

func main() {
	var cfg config
	flag.StringVar(&cfg.dir, "dir", "", "records directory")
	flag.StringVar(&cfg.pattern, "pattern", "writefile", "writefile or rename")
	flag.StringVar(&cfg.mode, "mode", "lockstep", "lockstep or free")
	flag.IntVar(&cfg.proc, "proc", 0, "this process's index")
	flag.IntVar(&cfg.tasks, "tasks", 4, "goroutines")
	flag.IntVar(&cfg.records, "records", 2, "records")
	flag.IntVar(&cfg.iterations, "iterations", 10, "requests per goroutine")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the free mode's record choice")
	flag.Parse()
	if cfg.dir == "" || (cfg.pattern != "writefile" && cfg.pattern != "rename") || (cfg.mode != "lockstep" && cfg.mode != "free") {
		flag.Usage()
		os.Exit(2)
	}

	start := time.Now()
	st := &stats{summary: summary{Commits: map[string]map[string]int{}, Errors: []string{}, Samples: []string{}}}
	var b *barrier
	if cfg.mode == "lockstep" {
		b = newBarrier(cfg.tasks, &coordinator{in: bufio.NewReader(os.Stdin)})
	}
	var wg sync.WaitGroup
	for t := range cfg.tasks {
		wg.Go(func() {
			if err := task(cfg, t, b, st); err != nil {
				st.add(func(s *summary) { s.Errors = append(s.Errors, fmt.Sprintf("goroutine %d: %v", t, err)) })
				if b != nil {
					b.abort(err)
				}
			}
		})
	}
	wg.Wait()
	st.Elapsed = time.Since(start).Seconds()
	out, _ := json.Marshal(st.summary)
	fmt.Printf("R %s\n", out)
}
