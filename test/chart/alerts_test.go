package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestAlerts checks the chart's PrometheusRule with promtool, built from
// Prometheus' module by `make test`: `promtool check rules` on its groups
// (PromQL syntax, templates, duplicate names), then `promtool test rules` on
// the unit tests in testdata/alerts, which feed series and state which
// alerts fire, with which labels and annotations, and which do not: that
// KubeProxyUnready stays silent for a kube-proxy whose node is being deleted,
// that a violation pages only under Enforce, and so on.
func TestAlerts(t *testing.T) {
	promtool := tool(t, "PROMTOOL")
	rule := render(t, "--set", "prometheusRule.enabled=true").find(t, "PrometheusRule", release)
	spec, ok := rule.Object["spec"].(map[string]any)
	if !ok {
		t.Fatal("the PrometheusRule has no spec")
	}
	rules, err := yaml.Marshal(map[string]any{"groups": spec["groups"]})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	run("check", "rules", "rules.yaml")

	tests, err := filepath.Glob(filepath.Join("testdata", "alerts", "*.yaml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no alert tests in testdata/alerts (%v)", err)
	}
	args := []string{"test", "rules"}
	for _, path := range tests {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Each test names rules.yaml, the rendered rules beside it.
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, filepath.Base(path))
	}
	run(args...)

	// Every alert has a test and a runbook section.
	runbooks, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	var tested strings.Builder
	for _, path := range tests {
		data, _ := os.ReadFile(path)
		tested.Write(data)
	}
	for _, g := range spec["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			name, _ := r.(map[string]any)["alert"].(string)
			if name == "" {
				continue
			}
			if !strings.Contains(tested.String(), "alertname: "+name+"\n") {
				t.Errorf("alert %s has no promtool test in testdata/alerts", name)
			}
			if !strings.Contains(string(runbooks), "\n## "+name+"\n") {
				t.Errorf("alert %s has no section `## %s` in docs/runbooks.md", name, name)
			}
			url, _ := r.(map[string]any)["annotations"].(map[string]any)["runbook_url"].(string)
			if !strings.HasSuffix(url, "/docs/runbooks.md#"+strings.ToLower(name)) {
				t.Errorf("alert %s: runbook_url %q does not point at its section", name, url)
			}
		}
	}
}
