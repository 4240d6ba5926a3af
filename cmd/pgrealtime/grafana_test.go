package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// exportedMetrics reads the metric names the binary exports from the
// sources of internal/metrics: name → kind (Histogram, Gauge, Counter,
// Summary).
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "internal", "metrics", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("internal/metrics: %v", err)
	}
	decl := regexp.MustCompile(`prometheus\.New(Histogram|Gauge|Counter|Summary)(?:Vec)?\(prometheus\.\w+Opts\{Namespace: ns, Name: "([a-z0-9_]+)"`)
	out := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			out["pgrealtime_"+m[2]] = m[1]
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metrics in internal/metrics", len(out))
	}
	return out
}

// seamBMetrics are the Redis broker's metrics (docs/cluster.md section 11),
// defined in internal/metrics/redis.go by the redis branch. Until that file
// is merged the dashboard may name them; once it exists they are checked
// like every other metric.
var seamBMetrics = map[string]string{
	"pgrealtime_redis_batch_seconds":         "Histogram",
	"pgrealtime_redis_appended_events_total": "Counter",
	"pgrealtime_redis_connected":             "Gauge",
	"pgrealtime_cluster_resets_total":        "Counter",
}

// TestGrafanaDashboard: docs/grafana-dashboard.json imports as is (a
// ${DS_PROMETHEUS} data source input used by every panel and query), has
// the panels operators need, and names only metrics the binary exports.
func TestGrafanaDashboard(t *testing.T) {
	var d struct {
		Inputs []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		Title  string          `json:"title"`
		UID    string          `json:"uid"`
		Panels []grafanaPanel  `json:"panels"`
		Templ  json.RawMessage `json:"templating"`
	}
	raw := repoFile(t, "docs/grafana-dashboard.json")
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Fatalf("__inputs %+v: want one prometheus datasource input DS_PROMETHEUS", d.Inputs)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q", d.Title, d.UID)
	}
	exported := exportedMetrics(t)
	if _, err := os.Stat(filepath.Join("..", "..", "internal", "metrics", "redis.go")); err != nil {
		t.Logf("internal/metrics/redis.go not merged yet: accepting the Redis broker's metrics %v by name", keys(seamBMetrics))
		for n, k := range seamBMetrics {
			if _, ok := exported[n]; !ok {
				exported[n] = k
			}
		}
	}
	name := regexp.MustCompile(`pgrealtime_[a-z0-9_]+`)
	used := map[string]bool{}
	check := func(where, expr string) {
		for _, n := range name.FindAllString(expr, -1) {
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suf); ok && (exported[b] == "Histogram" || exported[b] == "Summary") {
					base = b
				}
			}
			if _, ok := exported[base]; !ok {
				t.Errorf("%s uses %s, which pgrealtime does not export", where, n)
			}
			used[base] = true
		}
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${DS_PROMETHEUS}" || p.GridPos.W == 0 || p.GridPos.H == 0 || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, gridPos %+v, %d queries", p.Title, p.Datasource.UID, p.GridPos, len(p.Targets))
		}
		for _, q := range p.Targets {
			if q.Datasource.UID != "${DS_PROMETHEUS}" || q.Expr == "" {
				t.Errorf("panel %q: query %+v", p.Title, q)
			}
			check("panel "+p.Title, q.Expr)
		}
	}
	check("templating", string(d.Templ))
	// What the issue asks the dashboard to show.
	for _, want := range []string{
		"pgrealtime_connections", "pgrealtime_events_delivered_total", "pgrealtime_slow_consumer_closes_total",
		"pgrealtime_replication_lag_seconds", "pgrealtime_cluster_leader", "pgrealtime_redis_batch_seconds",
		"pgrealtime_cluster_resets_total", "pgrealtime_cluster_stream_lag_bytes",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	for _, q := range []string{"histogram_quantile(0.5,", "histogram_quantile(0.99,"} {
		if !strings.Contains(string(raw), q) {
			t.Errorf("no %s … pgrealtime_redis_batch_seconds_bucket", q)
		}
	}
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
