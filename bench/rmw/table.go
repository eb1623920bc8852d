package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mergefs/mergefs/internal/bytesize"
)

type machine struct {
	cpus      int
	cpuModel  string
	kernel    string
	loadStart string
	loadEnd   string
}

func describeMachine() machine {
	m := machine{cpus: runtime.NumCPU(), cpuModel: "unknown CPU", loadStart: loadAverage()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.cpuModel = strings.TrimSpace(value)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "?"
	}
	return strings.Join(fields[:3], " ")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summary is a cell's runs reduced to what the table shows.
type summary struct {
	rate, toLoopback, toPlain float64
	lost, torn, corrupt       int64
	lostShare                 float64
	hwmKB                     int64
	errors                    int64
}

func summarize(runs []cellResult, ratios [2][]float64) summary {
	var s summary
	var rates, lost, lostShare, torn []float64
	for _, r := range runs {
		rates = append(rates, r.rate)
		lost = append(lost, float64(r.lost))
		torn = append(torn, float64(r.torn))
		if r.cycles > 0 {
			lostShare = append(lostShare, float64(r.lost)/float64(r.cycles))
		}
		s.hwmKB = max(s.hwmKB, r.hwmKB)
		s.corrupt += r.corrupt
		s.errors += r.errors
	}
	s.rate = median(rates)
	s.toLoopback, s.toPlain = median(ratios[0]), median(ratios[1])
	s.lost, s.torn = int64(median(lost)), int64(median(torn))
	s.lostShare = median(lostShare)
	return s
}

func printTable(w io.Writer, b *bench, m machine, took time.Duration) {
	cfg := b.cfg
	fmt.Fprintln(w, "mergefs benchmark: legacy read-modify-write cycles (open, read, close, open O_TRUNC, write, close)")
	fmt.Fprintf(w, "machine: %d CPUs, %s, Linux %s, %s; load average %s at start, %s at end\n",
		m.cpus, m.cpuModel, m.kernel, runtime.Version(), m.loadStart, m.loadEnd)
	fmt.Fprintf(w, "%d run(s) of %v per cell in %v; medians; ratios are medians of per-run ratios to targets measured moments apart\n",
		cfg.runs, cfg.duration, took.Round(time.Second))
	fmt.Fprintln(w, "workers: separate processes, compiled, making the system calls of Python 3.11's json.load(open(p)) then json.dump(d, open(p, 'w'))")
	fmt.Fprintln(w, "lost: committed increments missing from the record at the end (median per run); torn: reads that found an empty or partial record")
	if cfg.reads > 0 {
		fmt.Fprintf(w, "\"N reads\" rows: each cycle is %d plain reads (json.load(open(p))) and then the read-modify-write\n", cfg.reads)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "record\tworkers\tfilesystem\tcycles/s\tx loopback\tx plain\tlost\ttorn\tpeak MiB\t")
	for _, g := range cfg.groups {
		size := g.size
		for _, sh := range g.shapes {
			for _, t := range b.targets {
				key := cellKey{t.name, size, sh}
				if _, measured := b.results[key]; !measured {
					continue
				}
				s := summarize(b.results[key], b.ratios[key])
				lost := fmt.Sprintf("%d", s.lost)
				if s.lost > 0 {
					lost = fmt.Sprintf("%d (%.0f%%)", s.lost, 100*s.lostShare)
				}
				if s.corrupt > 0 {
					lost += fmt.Sprintf(" +%d corrupt", s.corrupt)
				}
				mem := "-"
				if s.hwmKB > 0 {
					mem = fmt.Sprintf("%.1f", float64(s.hwmKB)/1024)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%d\t%s\t\n", bytesize.Label(size), sh, t.name, s.rate,
					ratio(s.toLoopback), ratio(s.toPlain), lost, s.torn, mem)
			}
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	printTargets(w, b)
	for _, p := range b.problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
}

func ratio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// speedTarget is issue 15's floor for mergefs's speed in a cell, as a ratio
// to the loopback: 2x for the read-heavy rows, 1x for records up to 4 KB,
// 0.8x up to 256 KB (1 to 4 workers) and 0.7x above; ok is false where there
// is none.
func speedTarget(size int, sh shape) (floor float64, ok bool) {
	switch {
	case sh.reads > 0:
		return 2, true
	case size <= 4<<10:
		return 1, true
	case size <= 256<<10:
		return 0.8, sh.workers <= 4
	}
	return 0.7, true
}

// printTargets checks the speed targets (issue 15's floors, and issue 6's
// scaling from 1 to 4 workers) on the measured cells.
func printTargets(w io.Writer, b *bench) {
	has := func(name string) bool {
		return slices.ContainsFunc(b.targets, func(t *target) bool { return t.name == name })
	}
	if !has("mergefs") {
		return
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	for _, g := range b.cfg.groups {
		size := g.size
		for _, name := range []string{"mergefs", "mergefs-no-cache-reads"} {
			for _, sh := range g.shapes {
				key := cellKey{name, size, sh}
				floor, ok := speedTarget(size, sh)
				if _, measured := b.results[key]; !ok || !measured || !has("loopback") {
					continue
				}
				r := median(b.ratios[key][0])
				fmt.Fprintf(w, "target %s >= %.1fx loopback, %s, %s: %.2fx %s\n", name, floor, bytesize.Label(size), sh, r, verdict(r >= floor))
			}
		}
		one, four := b.results[cellKey{"mergefs", size, shape{workers: 1}}], b.results[cellKey{"mergefs", size, shape{workers: 4}}]
		if len(one) > 0 && len(four) > 0 {
			var scale []float64
			for i := range min(len(one), len(four)) {
				if one[i].rate > 0 {
					scale = append(scale, four[i].rate/one[i].rate)
				}
			}
			r := median(scale)
			fmt.Fprintf(w, "target mergefs 4 distinct >= 1.5x 1 distinct, %s: %.2fx %s\n", bytesize.Label(size), r, verdict(r >= 1.5))
		}
	}
}
