// Package deploy holds no Go code: its tests prove the monitoring files
// shipped under /usr/share/dsr-agent/ (Prometheus rules, Grafana dashboard)
// against Prometheus' own promtool and against the real daemon's /metrics.
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	dsragent "github.com/dsr-agent/dsr-agent"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

const (
	rulesFile     = "prometheus/dsr-agent.rules.yml"
	rulesTestFile = "prometheus/dsr-agent.rules.test.yml"
	dashboardFile = "grafana/dsr-agent-pool.json"
	alertsDoc     = "../docs/alerts.md"
)

func TestMain(m *testing.M) {
	code := m.Run()
	netnstest.RemoveBuiltAgent()
	os.Exit(code)
}

// promtool returns Debian's promtool (package prometheus, mk/prom.packages);
// without it the test skips, or fails where skips are not allowed (CI).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv(netnstest.RequireRootEnv) == "1" {
		t.Fatalf("promtool not installed (apt-get install prometheus, or make deps-prom) and %s=1 forbids skipping", netnstest.RequireRootEnv)
	}
	t.Skip("promtool not installed: make deps-prom")
	return ""
}

func run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPromtoolRules: promtool checks the rules and runs their unit tests.
func TestPromtoolRules(t *testing.T) {
	pt := promtool(t)
	t.Log(run(t, nil, pt, "check", "rules", rulesFile))
	t.Log(run(t, nil, pt, "test", "rules", rulesTestFile))
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name           string `yaml:"name"`
		AlertRuleTests []struct {
			EvalTime  string `yaml:"eval_time"`
			AlertName string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func loadYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func loadRules(t *testing.T) ruleFile {
	var rf ruleFile
	loadYAML(t, rulesFile, &rf)
	return rf
}

// alertCoverage returns, for every alert, what the tests lack: a case where
// it fires and one where it stays silent. Tests of alerts the rules do not
// have are reported too (a renamed alert).
func alertCoverage(alerts []string, tests ruleTests) []string {
	fires, silent := map[string]bool{}, map[string]bool{}
	var problems []string
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTests {
			if !slices.Contains(alerts, a.AlertName) {
				problems = append(problems, fmt.Sprintf("test %q checks alert %q, which the rules do not have", tc.Name, a.AlertName))
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				silent[a.AlertName] = true
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] {
			problems = append(problems, fmt.Sprintf("alert %s has no test case where it fires (alert_rule_test with exp_alerts)", a))
		}
		if !silent[a] {
			problems = append(problems, fmt.Sprintf("alert %s has no test case where it stays silent (alert_rule_test with exp_alerts: [])", a))
		}
	}
	return problems
}

// TestEveryAlertTestedAndDocumented: an alert added without a firing and a
// silent case in the promtool tests, without severity, summary, description
// and a runbook_url pointing at its own section of docs/alerts.md, fails here.
func TestEveryAlertTestedAndDocumented(t *testing.T) {
	rf := loadRules(t)
	var tests ruleTests
	loadYAML(t, rulesTestFile, &tests)
	if !slices.Equal(tests.RuleFiles, []string{filepath.Base(rulesFile)}) {
		t.Errorf("%s tests rule_files %v, want [%s]", rulesTestFile, tests.RuleFiles, filepath.Base(rulesFile))
	}
	doc, err := os.ReadFile(alertsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[k] == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, k)
				}
			}
			if want := "docs/alerts.md#" + strings.ToLower(r.Alert); !strings.HasSuffix(r.Annotations["runbook_url"], want) {
				t.Errorf("alert %s: runbook_url %q does not end in %s", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !regexp.MustCompile(`(?m)^## ` + r.Alert + `$`).Match(doc) {
				t.Errorf("alert %s has no '## %s' section in docs/alerts.md", r.Alert, r.Alert)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alerts in " + rulesFile)
	}
	for _, p := range alertCoverage(alerts, tests) {
		t.Error(p)
	}
}

// TestAlertCoverageCatchesGaps: the coverage check fails an alert with only
// a firing case, only a silent case, or none, and a test of a vanished alert.
func TestAlertCoverageCatchesGaps(t *testing.T) {
	var tests ruleTests
	if err := yaml.Unmarshal([]byte(`
tests:
  - name: a
    alert_rule_test:
      - {alertname: Both, exp_alerts: [{exp_labels: {x: y}}]}
      - {alertname: Both, exp_alerts: []}
      - {alertname: OnlyFires, exp_alerts: [{exp_labels: {x: y}}]}
      - {alertname: OnlySilent}
      - {alertname: Gone, exp_alerts: []}
`), &tests); err != nil {
		t.Fatal(err)
	}
	got := alertCoverage([]string{"Both", "OnlyFires", "OnlySilent", "Untested"}, tests)
	want := []string{
		`test "a" checks alert "Gone", which the rules do not have`,
		"alert OnlyFires has no test case where it stays silent (alert_rule_test with exp_alerts: [])",
		"alert OnlySilent has no test case where it fires (alert_rule_test with exp_alerts)",
		"alert Untested has no test case where it fires (alert_rule_test with exp_alerts)",
		"alert Untested has no test case where it stays silent (alert_rule_test with exp_alerts: [])",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("coverage problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

var (
	strLit    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers  = regexp.MustCompile(`\{[^}]*\}`)
	grouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ranges    = regexp.MustCompile(`\[[^\]]*\]`)
	ident     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords  = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}
	labelVals = regexp.MustCompile(`^label_values\((.*),\s*[A-Za-z_]+\)$`)
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers outside strings, label matchers, grouping clauses and ranges
// that are not a function call or a keyword.
func metricNames(expr string) []string {
	if m := labelVals.FindStringSubmatch(expr); m != nil { // Grafana's variable query
		expr = m[1]
	}
	expr = strLit.ReplaceAllString(expr, `""`)
	expr = matchers.ReplaceAllString(expr, " ")
	expr = grouping.ReplaceAllString(expr, " ")
	expr = ranges.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range ident.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		// Part of a number or duration (2e3, 5m), or a Grafana variable.
		if loc[0] > 0 && strings.ContainsRune("0123456789.$", rune(expr[loc[0]-1])) {
			continue
		}
		// A function call.
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") || keywords[strings.ToLower(name)] {
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (instance, le) (rate(dsr_agent_reconcile_duration_seconds_bucket{job="$job", instance=~"$instance"}[$__rate_interval])))`: {"dsr_agent_reconcile_duration_seconds_bucket"},
		`dsr_agent_weight_percent <= on (job, instance) dsr_agent_weight_min_percent and on (job, instance) dsr_agent_weight_min_percent < 100`:                    {"dsr_agent_weight_min_percent", "dsr_agent_weight_percent"},
		`absent(up{job="dsr-agent"})`:                                             {"up"},
		`sum by (job, instance) (increase(dsr_agent_repairs_total[5m])) > 0`:      {"dsr_agent_repairs_total"},
		`max by (instance, state) (dsr_agent_drain{state="a{b}"} == 1) offset 1h`: {"dsr_agent_drain"},
		`label_values(dsr_agent_build_info{job="$job"}, instance)`:                {"dsr_agent_build_info"},
		`count(dsr_agent_no_such_metric) / 2e3`:                                   {"dsr_agent_no_such_metric"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource map[string]string `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr       string            `json:"expr"`
		RefID      string            `json:"refId"`
		Datasource map[string]string `json:"datasource"`
	} `json:"targets"`
}

// dashboardQueries returns every PromQL query of the dashboard: the panels'
// targets and the variables' queries.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard without uid or title")
	}
	var qs []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
			}
			qs = append(qs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok && v.Type == "query" {
			qs = append(qs, q["query"].(string))
		}
	}
	return qs
}

// grafanaVars replaces the dashboard's variables with values Prometheus
// accepts, so promtool can parse the queries.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$job", "dsr-agent", "$instance", ".*")

// TestDashboardQueriesParse: every dashboard query is valid PromQL (promtool
// parses them as recording rules).
func TestDashboardQueriesParse(t *testing.T) {
	qs := dashboardQueries(t)
	pt := promtool(t)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range qs {
		if labelVals.MatchString(q) {
			q = labelVals.FindStringSubmatch(q)[1]
		}
		e, _ := json.Marshal(grafanaVars.Replace(q))
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, e)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(run(t, nil, pt, "check", "rules", path))
}

// liveMetrics starts the real daemon (`dsr-agent run`) in a throwaway network
// namespace with every feature that has metrics (a VIP with a port, a check,
// the agent-check weight), makes it repair drift once, and returns its
// /metrics and the binary's --version.
func liveMetrics(t *testing.T) (metrics, version string) {
	t.Helper()
	bin := netnstest.AgentBinary(t)
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "10.77.0.2/24")
	ns.Exec(t, "ip", "route", "add", "default", "via", "10.77.0.1", "dev", "eth0")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(`mode: loopback
interfaces: [eth0]
vips:
  - address: 10.77.100.1
    ports: [{port: 80}]
health:
  listen: 10.77.0.2:8558
  checks:
    - {name: web, tcp: "127.0.0.1:9", interval: 200ms, timeout: 100ms}
  agent_check:
    listen: 10.77.0.2:3333
    weight: {load: true, min: 5}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command("ip", "netns", "exec", ns.Name, bin, "--config", cfg, "--state-dir", filepath.Join(dir, "state"), "run", "--resync", "1h")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
	get := func() string {
		var conn net.Conn
		var err error
		ns.Do(t, func() { conn, err = net.DialTimeout("tcp", "10.77.0.2:8558", time.Second) })
		if err != nil {
			return ""
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: 10.77.0.2\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return ""
		}
		return string(b)
	}
	// waitFor polls /metrics (the daemon has no event for "metric published")
	// until every series named is there.
	waitFor := func(what string, series ...string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			m := get()
			missing := slices.DeleteFunc(slices.Clone(series), func(s string) bool { return strings.Contains(m, "\n"+s) })
			if len(missing) == 0 {
				return m
			}
			select {
			case err := <-exited:
				t.Fatalf("daemon exited (%v) before %s", err, what)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /metrics lacks %v after 20s:\n%s", what, missing, m)
			}
		}
	}
	waitFor("first pass and weight sample", "dsr_agent_in_sync ", "dsr_agent_reconciles_total{", "dsr_agent_weight_percent ", `dsr_agent_check_up{check="web"}`)
	// Drift: the daemon puts the VIP back and counts a repair.
	ns.Exec(t, "ip", "addr", "del", "10.77.100.1/32", "dev", "lo")
	metrics = waitFor("a repair", `dsr_agent_repairs_total{kind="addr-add"} 1`)
	v, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	return metrics, string(v)
}

// exposedNames are the metric names in an exposition (sample lines).
func exposedNames(metrics string) map[string]bool {
	names := map[string]bool{}
	for l := range strings.SplitSeq(metrics, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		names[l[:strings.IndexAny(l, "{ ")]] = true
	}
	return names
}

// TestLiveMetrics: on the real daemon's /metrics, promtool check metrics
// passes; dsr_agent_build_info carries the version and commit --version
// prints; and every metric the alerts, recording rules and dashboard query
// exists (names Prometheus makes itself, like up, aside).
func TestLiveMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the daemon")
	}
	pt := promtool(t)
	metrics, version := liveMetrics(t)

	if out, err := func() ([]byte, error) {
		cmd := exec.Command(pt, "check", "metrics")
		cmd.Stdin = strings.NewReader(metrics)
		return cmd.CombinedOutput()
	}(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	m := regexp.MustCompile(`^dsr-agent (\S+) \(commit (\S+)\)\n$`).FindStringSubmatch(version)
	if m == nil || m[1] != dsragent.Version() {
		t.Fatalf("--version = %q, want version %s", version, dsragent.Version())
	}
	if want := fmt.Sprintf("\ndsr_agent_build_info{commit=%q,version=%q} 1\n", m[2], m[1]); !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %s", strings.TrimSpace(want))
	}

	have := exposedNames(metrics)
	prometheusOwn := map[string]bool{"up": true}
	recorded := map[string]bool{}
	used := map[string][]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			for _, n := range metricNames(r.Expr) {
				used[n] = append(used[n], rulesFile+" "+r.Alert+r.Record)
			}
		}
	}
	for _, q := range dashboardQueries(t) {
		for _, n := range metricNames(q) {
			used[n] = append(used[n], dashboardFile)
		}
	}
	if len(used) < 10 {
		t.Fatalf("only %d metric names found in the rules and dashboard: %v", len(used), used)
	}
	for n, where := range used {
		if !have[n] && !prometheusOwn[n] {
			t.Errorf("%s uses %s, which the daemon's /metrics does not expose", strings.Join(slices.Compact(where), ", "), n)
		}
	}
	// The dashboard works without the recording rules installed.
	for _, q := range dashboardQueries(t) {
		for _, n := range metricNames(q) {
			if recorded[n] {
				t.Errorf("dashboard query %q uses the recording rule %s", q, n)
			}
		}
	}
}
