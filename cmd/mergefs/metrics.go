package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	mergefs "github.com/mergefs/mergefs/fs"
	"github.com/mergefs/mergefs/internal/event"
	"github.com/mergefs/mergefs/journal"
	"github.com/mergefs/mergefs/merge"
)

// Metric names shared by the exporter and `mergefs status`.
const (
	metricCommits        = "mergefs_commits_total"
	metricUnchanged      = "mergefs_commits_unchanged_total"
	metricMerges         = "mergefs_merges_total"
	metricGrouped        = "mergefs_grouped_commits_total"
	metricConflicts      = "mergefs_conflicts_total"
	metricRejected       = "mergefs_rejected_commits_total"
	metricFailed         = "mergefs_failed_commits_total"
	metricFallbacks      = "mergefs_base_fallbacks_total"
	metricBases          = "mergefs_bases_total"
	metricAmbiguous      = "mergefs_ambiguous_bases_total"
	metricBaseDistance   = "mergefs_base_distance"
	metricOpenRecords    = "mergefs_open_record_handles"
	metricCachedOpens    = "mergefs_cached_opens_total"
	metricCacheRetries   = "mergefs_cache_retries_total"
	metricFileLocks      = "mergefs_file_locks"
	metricLockWaiters    = "mergefs_file_lock_waiters"
	metricReadVersions   = "mergefs_read_versions"
	metricReadBytes      = "mergefs_read_versions_bytes"
	metricReadMaxBytes   = "mergefs_read_versions_max_bytes"
	metricReadsEvicted   = "mergefs_read_versions_evicted_total"
	metricRecovered      = "mergefs_recovered_temp_files"
	metricJournalWritten = "mergefs_journal_lines_total"
	metricJournalDropped = "mergefs_journal_dropped_total"
	metricJournalErrors  = "mergefs_journal_write_errors_total"
	metricCommitSeconds  = "mergefs_commit_duration_seconds"
	metricLockWait       = "mergefs_commit_lock_wait_seconds"
	metricMountInfo      = "mergefs_mount_info"
	metricRuleMerges     = "mergefs_rule_merges_total"
	metricBuffered       = "mergefs_buffered_bytes"
	metricBufferedLimit  = "mergefs_buffered_limit_bytes"
	metricOpenFiles      = "mergefs_open_files"
	metricOpenFilesLimit = "mergefs_open_files_limit"
	metricLimitRefusals  = "mergefs_limit_refusals_total"
	metricRejectedBytes  = "mergefs_rejected_dir_bytes"
	metricRejectedDrop   = "mergefs_rejected_dir_dropped_total"
	metricBuildInfo      = "mergefs_build_info"
	metricStartTime      = "process_start_time_seconds"
)

// metrics holds one mount's private registry. The counters and gauges are
// read from fs.FS.Stats and the journal at scrape time (one source of
// truth); only the latency histograms are fed per commit.
type metrics struct {
	registry       *prometheus.Registry
	commitDuration *prometheus.HistogramVec
	lockWait       prometheus.Histogram
	baseDistance   prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		commitDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metricCommitSeconds,
			Help: "Time from a commit's start to its end, lock wait and merge included, by outcome.",
			// 50µs .. about 1.2s.
			Buckets: prometheus.ExponentialBuckets(50e-6, 2.5, 12),
		}, []string{"outcome"}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricLockWait,
			Help:    "Time a commit waited for its record's lock.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 3, 12),
		}),
	}
	m.baseDistance = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    metricBaseDistance,
		Help:    "Values the written content differs in from the base chosen for it (commits with a chosen base).",
		Buckets: []float64{0, 1, 2, 4, 8, 16, 64, 256, 1024},
	})
	build := readBuildInfo()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricBuildInfo,
		Help: "The daemon's build (always 1): module version, git revision (-modified: with uncommitted changes; unknown) and Go version.",
		ConstLabels: prometheus.Labels{
			"version": build.Version, "revision": build.revisionLabel(), "goversion": build.GoVersion,
		},
	})
	buildInfo.Set(1)
	m.registry.MustRegister(m.commitDuration, m.lockWait, m.baseDistance, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Commit implements fs.Observer: two lock-free histogram observations.
func (m *metrics) Commit(ev event.Commit) {
	m.commitDuration.WithLabelValues(string(ev.Outcome)).Observe(ev.Duration.Seconds())
	m.lockWait.Observe(ev.LockWait.Seconds())
	if ev.Base != event.NoBase {
		m.baseDistance.Observe(float64(ev.BaseDistance))
	}
}

// register adds the mount's counters, read when scraped, and its read
// history's memory bound (--read-memory).
func (m *metrics) register(fsys func() mergefs.Stats, jrnl func() journal.Stats, backing, mountpoint string, inPlace bool, readMemory int64) error {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        metricMountInfo,
		Help:        "The mount this daemon serves (always 1).",
		ConstLabels: prometheus.Labels{"backing": backing, "mountpoint": mountpoint, "in_place": boolLabel(inPlace)},
	})
	info.Set(1)
	if err := m.registry.Register(info); err != nil {
		return err
	}
	readMax := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricReadMaxBytes,
		Help: "The memory bound of the read history (--read-memory): past it, the least recently read records' histories are dropped.",
	})
	readMax.Set(float64(readMemory))
	if err := m.registry.Register(readMax); err != nil {
		return err
	}
	return m.registry.Register(&statsCollector{fsys: fsys, journal: jrnl})
}

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// statsCollector exports a snapshot of fs.Stats and journal.Stats per scrape:
// one Stats call, so the values of one scrape are consistent with each other.
type statsCollector struct {
	fsys    func() mergefs.Stats
	journal func() journal.Stats
}

type statDesc struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(mergefs.Stats, journal.Stats) float64
}

func newStatDesc(name, help string, kind prometheus.ValueType, value func(mergefs.Stats, journal.Stats) float64) statDesc {
	return statDesc{desc: prometheus.NewDesc(name, help, nil, nil), kind: kind, value: value}
}

var statDescs = []statDesc{
	newStatDesc(metricCommits, "Commits written to the backing store.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Commits) }),
	newStatDesc(metricUnchanged, "Commits whose merged content equalled the record (nothing written).", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Unchanged) }),
	newStatDesc(metricMerges, "Commits whose record had changed since the writer's base (a real 3-way merge).", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Merges) }),
	newStatDesc(metricGrouped, "Commits made in one replacement of their record with others: commits that queued for the record's lock, taken over by the next holder.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Grouped) }),
	newStatDesc(metricConflicts, "Conflicting keys, resolved by writer-wins or refused by reject.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Conflicts) }),
	newStatDesc(metricRejected, "Commits refused (invalid content or reject policy): close/fsync got EIO.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Rejected) }),
	newStatDesc(metricFailed, "Commits that failed in the backing store.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Failed) }),
	newStatDesc(metricFallbacks, "Commits whose base was the record at the writing open (no read of it was known).", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.BaseFallbacks) }),
	newStatDesc(metricAmbiguous, "Commits whose runner-up base candidate was within one change of the chosen one (journaled).", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.AmbiguousBases) }),
	newStatDesc(metricCachedOpens, "Record opens that read from the kernel's page cache (--cache-reads).", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.CachedOpens) }),
	newStatDesc(metricCacheRetries, "Record opens and truncates turned away from a version node while it was read from the page cache (--cache-reads; the kernel retried them on the record's own inode).", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.CacheRetries) }),
	newStatDesc(metricFileLocks, "flock and fcntl locks the daemon holds for processes (with cached reads; else the kernel keeps them).", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.FileLocks) }),
	newStatDesc(metricLockWaiters, "flock and fcntl lock requests waiting for a conflicting lock to go.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.LockWaiters) }),
	newStatDesc(metricOpenRecords, "Record handles open now.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.OpenRecords) }),
	newStatDesc(metricReadVersions, "Read versions tracked to choose merge bases.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.ReadVersions) }),
	newStatDesc(metricReadBytes, "Bytes of the distinct read versions tracked.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.ReadBytes) }),
	newStatDesc(metricReadsEvicted, "Read versions dropped by the age or memory bound.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.ReadsEvicted) }),
	newStatDesc(metricRecovered, "Temporary files of a crashed daemon removed at start.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.RecoveredFiles) }),
	newStatDesc(metricBuffered, "Record content held for open handles now (snapshots and buffered writes).", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Limits.Buffered) }),
	newStatDesc(metricBufferedLimit, "The bound on mergefs_buffered_bytes (--max-buffered).", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Limits.MaxBuffered) }),
	newStatDesc(metricOpenFiles, "Descriptors held for open files and directories that are not records.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Limits.OpenFiles) }),
	newStatDesc(metricOpenFilesLimit, "The bound on mergefs_open_files (the descriptor limit less a reserve; 0: none).", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.Limits.MaxOpen) }),
	newStatDesc(metricRejectedBytes, "Bytes of refused content kept in <state-dir>/rejected.", prometheus.GaugeValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.RejectedDir.Bytes) }),
	newStatDesc(metricRejectedDrop, "Refused contents removed from or not kept in <state-dir>/rejected by its bounds.", prometheus.CounterValue,
		func(s mergefs.Stats, _ journal.Stats) float64 { return float64(s.RejectedDir.Dropped) }),
	newStatDesc(metricJournalWritten, "Conflict lines written to the journal.", prometheus.CounterValue,
		func(_ mergefs.Stats, j journal.Stats) float64 { return float64(j.Written) }),
	newStatDesc(metricJournalDropped, "Conflict lines not journaled (queue full, per-commit bound).", prometheus.CounterValue,
		func(_ mergefs.Stats, j journal.Stats) float64 { return float64(j.Dropped) }),
	newStatDesc(metricJournalErrors, "Failed writes to the journal file.", prometheus.CounterValue,
		func(_ mergefs.Stats, j journal.Stats) float64 { return float64(j.WriteErrors) }),
}

// basesDesc counts commits by where their base came from (event.Base).
var basesDesc = prometheus.NewDesc(metricBases, "Commits by where their base came from: thread, process, own-commit, other-process, handle, fallback, none.", []string{"from"}, nil)

// ruleMergesDesc counts positions changed on both sides that a strategy merged without a conflict.
var ruleMergesDesc = prometheus.NewDesc(metricRuleMerges, "Positions changed on both sides that a strategy merged without a conflict, by strategy (counter, max, min, set, keyed, sequence, atomic, reject).", []string{"strategy"}, nil)

// refusalsDesc counts operations refused by a limit: writes past the buffer budget (ENOSPC or
// EDQUOT), record opens past it (ENOMEM), opens past the descriptor shares (EMFILE).
var refusalsDesc = prometheus.NewDesc(metricLimitRefusals, "Operations refused by a limit, by kind: write (ENOSPC/EDQUOT), snapshot (ENOMEM at open), files (EMFILE).", []string{"kind"}, nil)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range statDescs {
		ch <- d.desc
	}
	ch <- basesDesc
	ch <- refusalsDesc
	ch <- ruleMergesDesc
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s, j := c.fsys(), c.journal()
	for _, d := range statDescs {
		ch <- prometheus.MustNewConstMetric(d.desc, d.kind, d.value(s, j))
	}
	for _, b := range event.Bases {
		ch <- prometheus.MustNewConstMetric(basesDesc, prometheus.CounterValue, float64(s.Bases[b]), b.String())
	}
	for _, st := range merge.Strategies() {
		ch <- prometheus.MustNewConstMetric(ruleMergesDesc, prometheus.CounterValue, float64(s.RuleMerges[st]), string(st))
	}
	for _, r := range []struct {
		kind string
		n    uint64
	}{{"write", s.Limits.RefusedWrites}, {"snapshot", s.Limits.RefusedSnapshots}, {"files", s.Limits.RefusedFiles}} {
		ch <- prometheus.MustNewConstMetric(refusalsDesc, prometheus.CounterValue, float64(r.n), r.kind)
	}
}

// observers hands each commit event to several observers in turn.
type observers []event.Observer

func (o observers) Commit(ev event.Commit) {
	for _, x := range o {
		x.Commit(ev)
	}
}
