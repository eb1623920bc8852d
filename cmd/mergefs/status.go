package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mergefs/mergefs/internal/mountinfo"
)

const statusUsage = `Usage:
  mergefs status [MOUNTPOINT]
  mergefs status --state-dir DIR
  mergefs status --metrics ADDR

Prints the counters of a running mount for a person. It asks the daemon over
the status socket in the mount's state directory (DIR/mergefs.sock, root
only): the daemon's --state-dir, or the default for MOUNTPOINT
(/var/lib/mergefs/srv-data for /srv/data). Without MOUNTPOINT it takes the
one mergefs mount there is. With --metrics it reads the metrics endpoint of a
daemon started with --metrics ADDR instead. Both carry the same Prometheus
metrics.

Flags:
`

// runStatus reads a daemon's metrics and prints them for a person. The
// daemon always serves its metrics on a unix socket in its state directory,
// so status works without --metrics, with no file that can go stale, and
// shows exactly what Prometheus would scrape.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("status", flag.ContinueOnError)
	fl.SetOutput(stderr)
	stateDir := fl.String("state-dir", "", "state `directory` of the mount (as given to mergefs mount)")
	addr := fl.String("metrics", "", "read the metrics endpoint at `ADDR` (host:port or a URL) instead of the state directory's socket")
	timeout := fl.Duration("timeout", 5*time.Second, "give up after this `duration`")
	// Usage is printed here, once: to stdout when asked for, else to stderr
	// after the flag package's error.
	fl.Usage = func() {}
	usage := func(w io.Writer) {
		fmt.Fprint(w, statusUsage)
		fl.SetOutput(w)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		usage(stderr)
		return 2
	}
	if fl.NArg() > 1 || (fl.NArg() == 1 && (*stateDir != "" || *addr != "")) {
		fmt.Fprintln(stderr, "mergefs status: give one MOUNTPOINT, or --state-dir, or --metrics (see --help)")
		return 2
	}
	if *addr == "" && *stateDir == "" {
		dir, err := statusStateDir(fl.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "mergefs status: %v\n", err)
			return 1
		}
		*stateDir = dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	families, err := fetchMetrics(ctx, *stateDir, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "mergefs status: %v\n", err)
		return 1
	}
	printStatus(stdout, families, time.Now())
	return 0
}

// statusStateDir finds the state directory of the mount at mountpoint, or
// of the one mergefs mount there is.
func statusStateDir(mountpoint string) (string, error) {
	if mountpoint == "" {
		mounts, err := mountinfo.Read()
		if err != nil {
			return "", err
		}
		if mountpoint, err = pickMount(mounts); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	dir, _ := stateDirFor(abs, findDaemons("/proc"))
	return dir, nil
}

// fetchMetrics scrapes a daemon, over its status socket or addr.
func fetchMetrics(ctx context.Context, stateDir, addr string) (map[string]*dto.MetricFamily, error) {
	client := &http.Client{}
	url, where := metricsURL(addr), addr
	if addr == "" {
		socket, err := filepath.Abs(filepath.Join(stateDir, statusSocketName))
		if err != nil {
			return nil, err
		}
		where = socket
		url = "http://mergefs/metrics"
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("--metrics %q: %w", addr, err)
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := client.Do(req)
	if err != nil {
		return nil, explainDialError(err, stateDir, where, addr == "")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", where, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: not a metrics page: %w", where, err)
	}
	if families[metricCommits] == nil {
		return nil, fmt.Errorf("%s: no mergefs metrics there (is it a mergefs mount?)", where)
	}
	return families, nil
}

func metricsURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		if strings.Count(addr, "/") == 2 {
			return addr + "/metrics"
		}
		return addr
	}
	return "http://" + addr + "/metrics"
}

func explainDialError(err error, stateDir, where string, viaSocket bool) error {
	switch {
	case viaSocket && errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no mergefs daemon serves state directory %s (no %s): is the mount running? (a mount started with --state-dir needs the same --state-dir here)", stateDir, where)
	case viaSocket && errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("the daemon of state directory %s is gone (%s refuses connections)", stateDir, where)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s: permission denied (the status socket is root's)", where)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// printStatus writes the counters as a table, with what each one means.
func printStatus(w io.Writer, mf map[string]*dto.MetricFamily, now time.Time) {
	if info := first(mf[metricMountInfo]); info != nil {
		labels := map[string]string{}
		for _, l := range info.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		form := "backing " + labels["backing"]
		if labels["in_place"] == "true" {
			form = "in place"
		}
		fmt.Fprintf(w, "mergefs at %s (%s)", labels["mountpoint"], form)
		if start := value(mf, metricStartTime); start > 0 {
			up := now.Sub(time.Unix(0, int64(start*1e9))).Round(time.Second)
			fmt.Fprintf(w, ", up %s", up)
		}
		fmt.Fprintln(w)
	}
	if build := first(mf[metricBuildInfo]); build != nil {
		labels := map[string]string{}
		for _, l := range build.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		fmt.Fprintf(w, "  %-15s %s, revision %s, %s\n", "version", labels["version"], labels["revision"], labels["goversion"])
	}

	row := func(name string, n float64, note string) {
		fmt.Fprintf(w, "  %-15s %10.0f  %s\n", name, n, note)
	}
	row("commits", value(mf, metricCommits), "written to the backing store")
	row("unchanged", value(mf, metricUnchanged), "commits whose content the record already had")
	row("merges", value(mf, metricMerges), "commits into a record changed since the writer read it")
	row("grouped", value(mf, metricGrouped), "commits written in one replacement with others queued for the record's lock")
	row("conflicts", value(mf, metricConflicts), fmt.Sprintf("keys changed on both sides (journaled %.0f, not journaled %.0f)",
		value(mf, metricJournalWritten), value(mf, metricJournalDropped)))
	row("rejected", value(mf, metricRejected), "commits refused: invalid JSON or reject policy (close got EIO)")
	row("failed", value(mf, metricFailed), "commits the backing store failed")
	row("base fallbacks", value(mf, metricFallbacks), "commits with no known read; base was the record at open")
	row("ambiguous", value(mf, metricAmbiguous), "commits whose next-best base was within one change (journaled)")
	if bases := labelled(mf[metricBases], "from"); len(bases) > 0 {
		fmt.Fprintf(w, "  %-15s %s\n", "bases from", bases)
	}
	if merges := labelled(mf[metricRuleMerges], "strategy"); merges != "" {
		fmt.Fprintf(w, "  %-15s %s  (changes on both sides merged by a strategy)\n", "merged by", merges)
	}
	row("open records", value(mf, metricOpenRecords), "record handles open now")
	row("cached opens", value(mf, metricCachedOpens), "record opens read from the page cache (--cache-reads)")
	row("cache retries", value(mf, metricCacheRetries), "opens turned away from readers of the page cache (retried)")
	row("file locks", value(mf, metricFileLocks), fmt.Sprintf("flock and fcntl locks held (%.0f requests waiting)", value(mf, metricLockWaiters)))
	held := humanBytes(value(mf, metricReadBytes))
	if max := value(mf, metricReadMaxBytes); max > 0 {
		held += " of " + humanBytes(max)
	}
	row("read versions", value(mf, metricReadVersions), fmt.Sprintf("tracked to choose bases (%s, %.0f evicted)",
		held, value(mf, metricReadsEvicted)))
	if limit := value(mf, metricBufferedLimit); limit > 0 {
		fmt.Fprintf(w, "  %-15s %s of %s  record content held for open handles\n", "buffered",
			humanBytes(value(mf, metricBuffered)), humanBytes(limit))
	}
	if limit := value(mf, metricOpenFilesLimit); limit > 0 {
		fmt.Fprintf(w, "  %-15s %.0f of %.0f  descriptors held for open files and directories\n", "open files",
			value(mf, metricOpenFiles), limit)
	}
	if refusals := labelled(mf[metricLimitRefusals], "kind"); refusals != "" {
		fmt.Fprintf(w, "  %-15s %s  (see the daemon's log)\n", "limit refusals", refusals)
	}
	row("rejected dir", value(mf, metricRejectedBytes), fmt.Sprintf("bytes kept in <state-dir>/rejected (%.0f dropped by its bounds)",
		value(mf, metricRejectedDrop)))

	for _, h := range []struct{ label, name string }{
		{"commit time", metricCommitSeconds},
		{"lock wait", metricLockWait},
	} {
		if s, ok := summarize(mf[h.name]); ok {
			fmt.Fprintf(w, "  %-15s mean %s, p99 %s over %d commits\n", h.label, seconds(s.mean), s.p99, s.count)
		}
	}
}

// labelled lists a labelled counter's non-zero values as "label=value ...", in the exporter's order.
func labelled(f *dto.MetricFamily, label string) string {
	var parts []string
	for _, m := range f.GetMetric() {
		if m.GetCounter().GetValue() == 0 {
			continue
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				parts = append(parts, fmt.Sprintf("%s=%.0f", l.GetValue(), m.GetCounter().GetValue()))
			}
		}
	}
	return strings.Join(parts, " ")
}

func first(f *dto.MetricFamily) *dto.Metric {
	if f == nil || len(f.GetMetric()) == 0 {
		return nil
	}
	return f.GetMetric()[0]
}

// value is a counter's or gauge's value, summed over its label sets.
func value(mf map[string]*dto.MetricFamily, name string) float64 {
	f := mf[name]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

type histogramSummary struct {
	count uint64
	mean  float64
	p99   string
}

// summarize merges a histogram's label sets and reads its mean and the
// bucket that holds the 99th percentile (an upper bound, not an estimate).
func summarize(f *dto.MetricFamily) (histogramSummary, bool) {
	if f == nil {
		return histogramSummary{}, false
	}
	var count uint64
	var sum float64
	buckets := map[float64]uint64{}
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		count += h.GetSampleCount()
		sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	if count == 0 {
		return histogramSummary{}, false
	}
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	p99 := "above " + seconds(bounds[len(bounds)-1])
	need := uint64(math.Ceil(0.99 * float64(count)))
	for _, b := range bounds {
		if buckets[b] >= need {
			p99 = "<= " + seconds(b)
			break
		}
	}
	return histogramSummary{count: count, mean: sum / float64(count), p99: p99}, true
}

func seconds(s float64) string {
	switch {
	case s < 1e-3:
		return fmt.Sprintf("%.0fµs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.2fms", s*1e3)
	}
	return fmt.Sprintf("%.2fs", s)
}

func humanBytes(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}
