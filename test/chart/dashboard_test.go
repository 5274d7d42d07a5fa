package chart

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
)

// TestDashboard renders the chart's Grafana dashboard ConfigMap and checks
// that every query names only metrics the server exports: endpoint-policy's
// own (every one the Recorder registers, whether or not it has a series
// yet) and controller-runtime's webhook metrics (registered as the server
// registers its webhooks). promtool parses each query, so a typo in PromQL
// fails here rather than as an empty panel.
func TestDashboard(t *testing.T) {
	m := render(t, "--set", "dashboards.enabled=true", "--set", "dashboards.annotations.grafana_folder=Kubernetes")
	cm := m.find(t, "ConfigMap", release+"-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetAnnotations()["grafana_folder"] != "Kubernetes" {
		t.Errorf("labels %v, annotations %v: want grafana_dashboard=1 and the given annotation", cm.GetLabels(), cm.GetAnnotations())
	}
	if render(t).get("ConfigMap", release+"-dashboard") != nil {
		t.Error("the dashboard is rendered without dashboards.enabled")
	}
	data, _, _ := unstructuredString(cm.Object, "data", "endpoint-policy.json")
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(data), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("uid %q, %d panels", dash.UID, len(dash.Panels))
	}

	exported := exportedMetrics(t)
	var exprs []string
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
			names := metricNames(target.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: no metric in %q", p.Title, target.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !exported[n] {
					t.Errorf("panel %q: %s is not a metric the server exports (query %q)", p.Title, n, target.Expr)
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition == "" {
			continue
		}
		if m := regexp.MustCompile(`label_values\((\w+),`).FindStringSubmatch(v.Definition); m == nil || !exported[m[1]] {
			t.Errorf("variable query %q does not read an exported metric", v.Definition)
		}
	}
	// What the issue asks the dashboard to show.
	for _, n := range []string{"endpoint_policy_admission_decisions_total", "controller_runtime_webhook_latency_seconds_bucket",
		"endpoint_policy_violations", "endpoint_policy_endpoint_nodes", "endpoint_policy_kube_proxy_node_deleting"} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}

	// PromQL syntax: promtool parses each query as a recording rule, with
	// Grafana's variables replaced.
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$job", "endpoint-policy-metrics")
	var rules []map[string]string
	for i, e := range exprs {
		rules = append(rules, map[string]string{"record": "dashboard:query_" + string(rune('a'+i/26)) + string(rune('a'+i%26)), "expr": grafana.Replace(e)})
	}
	file, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool(t, "PROMTOOL"), "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// exportedMetrics returns the name of every series the server can export:
// each metric the Recorder registers (from its descriptors, so vectors
// without a series count), histograms with _bucket, _sum and _count, and
// controller-runtime's webhook metrics, which exist once a webhook is
// registered on its server.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := &describing{}
	if _, err := metrics.NewRecorder(reg); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range reg.names {
		names[n] = true
	}
	srv := webhook.NewServer(webhook.Options{})
	srv.Register("/dashboard-test", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.WebhookMux().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/dashboard-test", nil))
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "controller_runtime_webhook_") {
			continue
		}
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	if !names["controller_runtime_webhook_latency_seconds_bucket"] || !names["endpoint_policy_violations"] {
		keys := make([]string, 0, len(names))
		for n := range names {
			keys = append(keys, n)
		}
		sort.Strings(keys)
		t.Fatalf("the exported metrics are not what the test expects to find: %v", keys)
	}
	return names
}

// describing is a Registerer that keeps the names of what is registered.
type describing struct{ names []string }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names = append(d.names, m[1])
		}
	}
	return nil
}
func (d *describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}
func (d *describing) Unregister(prometheus.Collector) bool { return false }

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = map[string]bool{
		"sum": true, "max": true, "min": true, "avg": true, "count": true, "rate": true, "increase": true,
		"histogram_quantile": true, "and": true, "or": true, "unless": true, "group_left": true, "group_right": true,
		"by": true, "without": true, "on": true, "ignoring": true, "time": true,
	}
)

// metricNames returns the metric names a PromQL query selects. The
// dashboard's queries use the functions and operators in promqlKeywords; any
// other identifier counts as a metric name, so an unknown function fails the
// test rather than slipping through.
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, "")
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, id := range promqlIdent.FindAllString(s, -1) {
		if !promqlKeywords[id] {
			out = append(out, id)
		}
	}
	return out
}
