package scripts_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// needTool finds a program the test needs: a skip without it, a failure in CI.
func needTool(t *testing.T, name, why string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is missing in CI (%s): %v", name, why, err)
		}
		t.Skipf("%s not installed (%s): %v", name, why, err)
	}
	return path
}

// The alerting rules are valid (promtool check rules) and do what
// alerts_test.yml says: each alert fires on its "bad" series and on no other
// (promtool test rules fails on an alert it was not told to expect).
func TestPrometheusRules(t *testing.T) {
	promtool := needTool(t, "promtool", ".ci/run installs Debian's prometheus package")
	dir := filepath.Join(moduleRoot, "scripts", "prometheus")
	if out, err := runCmd(t, time.Minute, nil, promtool, "check", "rules", filepath.Join(dir, "alerts.yml")); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}

	// Every alert has a test, and its summary names its runbook entry, which
	// the README has.
	rules := alertRules(t)
	tests, err := os.ReadFile(filepath.Join(dir, "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) < 8 {
		t.Errorf("%d alerts in alerts.yml, want at least 8", len(rules))
	}
	for _, r := range rules {
		if !strings.Contains(string(tests), "alertname: "+r.name+"\n") {
			t.Errorf("alert %s has no test in alerts_test.yml", r.name)
		}
		if !strings.Contains(r.summary, "Runbook: README, Operating mergefs, "+r.name+".") {
			t.Errorf("alert %s: summary %q does not name its runbook entry", r.name, r.summary)
		}
		if !strings.Contains(string(readme), "\n#### "+r.name+"\n") {
			t.Errorf("README has no runbook entry \"#### %s\"", r.name)
		}
	}
}

type alertRule struct{ name, expr, summary string }

// alertRules reads scripts/prometheus/alerts.yml: each rule's name,
// expression (one line, or a "|" block) and summary.
func alertRules(t *testing.T) []alertRule {
	t.Helper()
	f, err := os.Open(filepath.Join(moduleRoot, "scripts", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rules []alertRule
	var block *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if block != nil {
			if strings.HasPrefix(line, "          ") || trimmed == "" {
				block.WriteString(trimmed + " ")
				continue
			}
			rules[len(rules)-1].expr = strings.TrimSpace(block.String())
			block = nil
		}
		switch {
		case strings.HasPrefix(trimmed, "- alert: "):
			rules = append(rules, alertRule{name: strings.TrimPrefix(trimmed, "- alert: ")})
		case len(rules) == 0:
		case trimmed == "expr: |":
			block = &strings.Builder{}
		case strings.HasPrefix(trimmed, "expr: "):
			rules[len(rules)-1].expr = strings.TrimPrefix(trimmed, "expr: ")
		case strings.HasPrefix(trimmed, "summary: "):
			var s string
			if err := json.Unmarshal([]byte(strings.TrimPrefix(trimmed, "summary: ")), &s); err != nil {
				t.Fatalf("alerts.yml: summary %q: %v", trimmed, err)
			}
			rules[len(rules)-1].summary = s
		}
	}
	for _, r := range rules {
		if r.expr == "" {
			t.Fatalf("alerts.yml: no expr for %s", r.name)
		}
	}
	return rules
}

type panelQuery struct{ panel, expr string }

// dashboardQueries reads every query of every panel of the Grafana dashboard.
func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot, "scripts", "grafana", "mergefs.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []panel `json:"panels"`
	}
	var dash struct {
		UID    string  `json:"uid"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("mergefs.json: %v", err)
	}
	var out []panelQuery
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				if q.Expr == "" {
					t.Errorf("panel %q has an empty query", p.Title)
				}
				out = append(out, panelQuery{p.Title, q.Expr})
			}
		}
	}
	walk(dash.Panels)
	return out
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlVars     = regexp.MustCompile(`\$\{?\w+\}?`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// promqlNames returns the metric names a PromQL expression reads: its
// identifiers that are not functions, keywords, label names, durations or
// Grafana variables.
func promqlNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	s = promqlVars.ReplaceAllString(s, " ")
	seen := map[string]bool{}
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(s[loc[0]-1:loc[0]], "0123456789.") {
			continue // the exponent of a number: 1e3
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || promqlKeywords[strings.ToLower(name)] {
			continue
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return names
}

func TestPromqlNames(t *testing.T) {
	for expr, want := range map[string]string{
		`rate(mergefs_commits_total{job="$job", instance=~"$instance"}[$__rate_interval])`:                           "mergefs_commits_total",
		`histogram_quantile(0.99, sum by (instance, le) (rate(mergefs_commit_lock_wait_seconds_bucket{a="b"}[5m])))`: "mergefs_commit_lock_wait_seconds_bucket",
		`time() - process_start_time_seconds`:                       "process_start_time_seconds",
		`rate(x_total[10m]) > 0 and y_bytes > 0.9 * z_max_bytes`:    "x_total y_bytes z_max_bytes",
		`up{job="mergefs"} == 0`:                                    "up",
		`sum without (from) (rate(mergefs_bases_total[15m])) > 1e3`: "mergefs_bases_total",
		`a / on (instance) group_left (version) b`:                  "a b",
	} {
		if got := strings.Join(promqlNames(expr), " "); got != want {
			t.Errorf("promqlNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// exportedNames are the series names a metrics page has: each family's, and
// a histogram's _bucket, _sum and _count.
func exportedNames(families map[string]*dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for name, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
		default:
			names[name] = true
		}
	}
	return names
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(t *testing.T, u string) ([]byte, error) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s: %s", u, resp.Status, body)
	}
	return body, err
}

// Every query of every dashboard panel, and every alert expression, reads
// only metrics that a live daemon exports: a real mount, with some commits,
// scraped over --metrics. Then a real Prometheus scrapes it with the alerting
// rules loaded: every panel query evaluates without error to some series,
// and every rule evaluates healthy.
func TestDashboardAndAlertsOnLiveDaemon(t *testing.T) {
	needTool(t, "python3", "the client that makes commits")
	w := workDir(t)
	b, m, state := filepath.Join(w, "b"), filepath.Join(w, "m"), filepath.Join(w, "state")
	mkdirs(t, 0o755, b, m)
	addr := freePort(t)
	startDaemon(t, nil, m, "--state-dir", state, "--metrics", addr, b, m)

	// Commits: a new record, a read-modify-write, a rejected write.
	rec := filepath.Join(m, "r.json")
	if out, err := runCmd(t, 20*time.Second, nil, "sh", "-c", `echo '{"n":1,"s":"x"}' > "$0"`, rec); err != nil {
		t.Fatalf("create a record: %v %s", err, out)
	}
	if out, err := runCmd(t, 20*time.Second, nil, "python3", "-c", `import json, sys
p = sys.argv[1]
d = json.load(open(p))
d["n"] += 1
with open(p, "w") as f:
    json.dump(d, f)
try:
    with open(p, "w") as f:
        f.write("{not json")
except OSError:
    pass
`, rec); err != nil {
		t.Fatalf("read-modify-write: %v %s", err, out)
	}

	body, err := httpGet(t, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("metrics page: %v", err)
	}
	live := exportedNames(families)
	// up is Prometheus's own, for every target.
	live["up"] = true

	queries := dashboardQueries(t)
	used := map[string]bool{}
	for _, q := range queries {
		names := promqlNames(q.expr)
		if len(names) == 0 {
			t.Errorf("panel %q: no metric in %s", q.panel, q.expr)
		}
		for _, n := range names {
			used[n] = true
			if !live[n] {
				t.Errorf("panel %q reads %s, which the daemon does not export (query %s)", q.panel, n, q.expr)
			}
		}
	}
	for _, r := range alertRules(t) {
		for _, n := range promqlNames(r.expr) {
			if !live[n] {
				t.Errorf("alert %s reads %s, which the daemon does not export (expr %s)", r.name, n, r.expr)
			}
		}
	}
	// What the dashboard is for: commits, merges, conflicts by outcome,
	// rejected, the two latency heatmaps, read-version memory, open
	// handles, bases by source.
	for _, n := range []string{"mergefs_commits_total", "mergefs_merges_total", "mergefs_conflicts_total",
		"mergefs_commit_duration_seconds_count", "mergefs_rejected_commits_total", "mergefs_commit_duration_seconds_bucket",
		"mergefs_commit_lock_wait_seconds_bucket", "mergefs_read_versions_bytes", "mergefs_open_record_handles", "mergefs_bases_total"} {
		if !used[n] {
			t.Errorf("the dashboard has no panel on %s", n)
		}
	}

	checkDaemonVersion(t, families, state)

	if t.Failed() {
		return
	}
	prometheusEvaluates(t, w, addr, queries)
}

// checkDaemonVersion: the daemon exports its build (mergefs_build_info,
// the binary's revision and Go version) and `mergefs status` shows it.
func checkDaemonVersion(t *testing.T, families map[string]*dto.MetricFamily, state string) {
	t.Helper()
	f := families["mergefs_build_info"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("no mergefs_build_info: %v", f)
	}
	labels := map[string]string{}
	for _, l := range f.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	goVersion, _ := runCmd(t, time.Minute, nil, "go", "env", "GOVERSION")
	if labels["goversion"] != strings.TrimSpace(goVersion) {
		t.Errorf("mergefs_build_info goversion %q, want %q", labels["goversion"], goVersion)
	}
	if rev, err := runCmd(t, time.Minute, nil, "git", "-C", moduleRoot, "rev-parse", "HEAD"); err == nil {
		if !strings.HasPrefix(labels["revision"], strings.TrimSpace(rev)) {
			t.Errorf("mergefs_build_info revision %q, want %s", labels["revision"], rev)
		}
	} else if inCI() {
		t.Errorf("git rev-parse HEAD: %v %s", err, rev)
	}
	out, err := mergefsCmd(t, "status", "--state-dir", state)
	want := fmt.Sprintf("\n  version         %s, revision %s, %s\n", labels["version"], labels["revision"], labels["goversion"])
	if err != nil || !strings.Contains(out, want) {
		t.Errorf("mergefs status: %v; want %q in:\n%s", err, want, out)
	}
}

type promResponse struct {
	Status string          `json:"status"`
	Error  string          `json:"error"`
	Data   json.RawMessage `json:"data"`
}

// prometheusEvaluates runs a Prometheus server (127.0.0.1 only, its data in
// w) that scrapes the daemon at target every second with the alerting rules,
// evaluates every dashboard query there, and checks the rules' health.
func prometheusEvaluates(t *testing.T, w, target string, queries []panelQuery) {
	t.Helper()
	prometheus := needTool(t, "prometheus", ".ci/run installs Debian's prometheus package")
	rules := filepath.Join(moduleRoot, "scripts", "prometheus", "alerts.yml")
	config := filepath.Join(w, "prometheus.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: mergefs
    static_configs: [{targets: [%q]}]
`, rules, target)), 0o644); err != nil {
		t.Fatal(err)
	}
	web := freePort(t)
	log := &lockedBuffer{}
	cmd := exec.Command(prometheus, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(w, "tsdb"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log)
		}
	}()
	api := "http://" + web + "/api/v1/"
	query := func(expr string) (promResponse, []json.RawMessage) {
		var r promResponse
		body, err := httpGet(t, api+"query?query="+url.QueryEscape(expr))
		if err != nil && body == nil {
			return promResponse{Status: "error", Error: err.Error()}, nil
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return promResponse{Status: "error", Error: fmt.Sprintf("%v: %s", err, body)}, nil
		}
		var data struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		}
		json.Unmarshal(r.Data, &data)
		var series []json.RawMessage
		if data.ResultType == "scalar" {
			series = []json.RawMessage{data.Result}
		} else {
			json.Unmarshal(data.Result, &series)
		}
		return r, series
	}
	// Ready once two scrapes are in (a rate needs two samples).
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, series := query(`count_over_time(up{job="mergefs"}[1m]) >= 2 and up{job="mergefs"} == 1`)
		if r.Status == "success" && len(series) == 1 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has not scraped mergefs twice in 60s (%+v)", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	subst := strings.NewReplacer("$__rate_interval", "1m", "$job", "mergefs", "$instance", ".+")
	for _, q := range queries {
		expr := subst.Replace(q.expr)
		r, series := query(expr)
		if r.Status != "success" {
			t.Errorf("panel %q: %s: %s", q.panel, expr, r.Error)
		} else if len(series) == 0 {
			t.Errorf("panel %q: %s: no series from a live daemon", q.panel, expr)
		}
	}

	// Every rule evaluated, healthy.
	want := map[string]bool{}
	for _, r := range alertRules(t) {
		want[r.name] = true
	}
	for {
		body, err := httpGet(t, api+"rules")
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name           string `json:"name"`
						Health         string `json:"health"`
						LastError      string `json:"lastError"`
						LastEvaluation string `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err == nil {
			err = json.Unmarshal(body, &r)
		}
		var problems []string
		seen := 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				if want[rule.Name] {
					seen++
				}
				if rule.Health != "ok" {
					problems = append(problems, fmt.Sprintf("%s: health %q %s (last evaluated %s)", rule.Name, rule.Health, rule.LastError, rule.LastEvaluation))
				}
			}
		}
		sort.Strings(problems)
		if err == nil && seen == len(want) && len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rules: %v; %d of %d loaded; %s", err, seen, len(want), strings.Join(problems, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
