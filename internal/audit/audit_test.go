package audit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

func newTestState(t *testing.T) (*state, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.NewRecorder(reg)
	if err != nil {
		t.Fatal(err)
	}
	return newState(m), reg
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, id policy.ID, ns, kind string) float64 {
	t.Helper()
	v, err := metricstest.Value(reg, "endpoint_policy_violations", map[string]string{"policy": string(id), "namespace": ns, "kind": kind})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func podKey(ns, name string) Key {
	return Key{Kind: "Pod", NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

func podRef(ns, name string) *objectRef {
	return &objectRef{APIVersion: "v1", Kind: "Pod", Namespace: ns, Name: name, UID: types.UID(ns + "/" + name)}
}

func TestStateAnnouncesEachViolationOnceAndCounts(t *testing.T) {
	s, reg := newTestState(t)
	t0 := time.Unix(1000, 0)
	v := violation{Policy: "p", Mode: policy.Enforce, Action: policy.ActionDeny, Message: "bad", Since: t0}

	steps := []struct {
		name       string
		key        Key
		ref        *objectRef
		violations []violation
		wantNew    int
		wantGauge  float64
	}{
		{"a new violation is announced", podKey("a", "x"), podRef("a", "x"), []violation{v}, 1, 1},
		{"the same again (next interval) is not", podKey("a", "x"), podRef("a", "x"), []violation{v}, 0, 1},
		{"another object with it counts", podKey("a", "y"), podRef("a", "y"), []violation{v}, 1, 2},
		{"the same in Audit (a reload) is not announced again", podKey("a", "x"), podRef("a", "x"), []violation{{Policy: "p", Mode: policy.Audit, Action: policy.ActionWarn, Message: "bad"}}, 0, 2},
		{"a changed message is a new violation", podKey("a", "x"), podRef("a", "x"), []violation{{Policy: "p", Action: policy.ActionDeny, Message: "worse"}}, 1, 2},
		{"fixed", podKey("a", "x"), podRef("a", "x"), nil, 0, 1},
		{"gone", podKey("a", "y"), nil, nil, 0, 0},
		{"back after the fix: announced again", podKey("a", "x"), podRef("a", "x"), []violation{v}, 1, 1},
		{"a new pod under the same name is announced", podKey("a", "x"), &objectRef{Kind: "Pod", Namespace: "a", Name: "x", UID: "new"}, []violation{v}, 1, 1},
	}
	for _, st := range steps {
		added := s.set(st.key, st.ref, append([]violation(nil), st.violations...), 0)
		if len(added) != st.wantNew {
			t.Errorf("%s: %d violations to announce, want %d", st.name, len(added), st.wantNew)
		}
		if got := gaugeValue(t, reg, "p", "a", "Pod"); got != st.wantGauge {
			t.Errorf("%s: gauge %v, want %v", st.name, got, st.wantGauge)
		}
	}
}

func TestStateKeepsFirstSeen(t *testing.T) {
	s, _ := newTestState(t)
	first, later := time.Unix(1000, 0), time.Unix(2000, 0)
	s.set(podKey("a", "x"), podRef("a", "x"), []violation{{Policy: "p", Action: policy.ActionWarn, Message: "m", Since: first}}, 0)
	s.set(podKey("a", "x"), podRef("a", "x"), []violation{{Policy: "p", Action: policy.ActionWarn, Message: "m", Since: later}}, 0)
	entries := s.takeDirty()["a"]
	if len(entries) != 1 || !entries[0].violations[0].Since.Equal(first) {
		t.Fatalf("entries = %+v, want the violation first seen at %v", entries, first)
	}
	if dirty := s.takeDirty(); len(dirty) != 0 {
		t.Errorf("takeDirty twice: %v, want nothing the second time", dirty)
	}
}

func TestBuildReport(t *testing.T) {
	since := time.Unix(1700000000, 0)
	mk := func(name string, passes int, vs ...violation) entry {
		return entry{ref: *podRef("ns", name), violations: vs, passes: passes}
	}
	deny := func(id policy.ID) violation {
		return violation{Policy: id, Mode: policy.Enforce, Action: policy.ActionDeny, Message: "[" + string(id) + "] bad", Since: since}
	}
	warn := func(id policy.ID) violation {
		return violation{Policy: id, Mode: policy.Audit, Action: policy.ActionWarn, Message: "[" + string(id) + "] meh", Since: since}
	}
	many := make([]entry, 0, 1000)
	for i := range 1000 {
		many = append(many, mk(fmt.Sprintf("p-%04d", i), 1, deny("host-network-endpoint")))
	}
	tests := []struct {
		name        string
		entries     []entry
		limit       int
		wantNil     bool
		wantSummary map[string]int64
		wantResults []string // policy/result/name
		wantOmitted string
	}{
		{name: "nothing to report", entries: []entry{mk("a", 3)}, limit: 10, wantNil: true},
		{name: "failures first, then by policy and name", limit: 10,
			entries:     []entry{mk("b", 1, warn("x-policy")), mk("a", 0, deny("y-policy"), warn("a-policy")), mk("c", 2)},
			wantSummary: map[string]int64{"pass": 3, "fail": 1, "warn": 2, "error": 0, "skip": 0},
			wantResults: []string{"y-policy/fail/a", "a-policy/warn/a", "x-policy/warn/b"}},
		{name: "1,000 failures: 100 listed, all counted", entries: many, limit: 100,
			wantSummary: map[string]int64{"pass": 1000, "fail": 1000, "warn": 0, "error": 0, "skip": 0},
			wantOmitted: "900"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := buildReport(reportAPIs[0], "ns", tt.entries, tt.limit)
			if tt.wantNil {
				if r != nil {
					t.Fatalf("report = %v, want none", r.Object)
				}
				return
			}
			if r.GetName() != ReportName || r.GetNamespace() != "ns" || r.GetLabels()[ManagedByLabel] != "endpoint-policy" {
				t.Errorf("report %s/%s labels %v", r.GetNamespace(), r.GetName(), r.GetLabels())
			}
			for k, want := range tt.wantSummary {
				if got, _, _ := unstructured.NestedInt64(r.Object, "summary", k); got != want {
					t.Errorf("summary.%s = %d, want %d", k, got, want)
				}
			}
			results, _, _ := unstructured.NestedSlice(r.Object, "results")
			if len(results) > tt.limit {
				t.Errorf("%d results, want at most %d", len(results), tt.limit)
			}
			if tt.wantResults != nil {
				var got []string
				for _, res := range results {
					m := res.(map[string]any)
					name := m["resources"].([]any)[0].(map[string]any)["name"]
					got = append(got, fmt.Sprintf("%s/%s/%s", m["policy"], m["result"], name))
				}
				if strings.Join(got, " ") != strings.Join(tt.wantResults, " ") {
					t.Errorf("results %v, want %v", got, tt.wantResults)
				}
				first := results[0].(map[string]any)
				if first["properties"].(map[string]any)["action"] != "deny" || first["timestamp"].(map[string]any)["seconds"] != since.Unix() {
					t.Errorf("first result %v: want properties.action deny and the time first seen", first)
				}
			}
			if got := r.GetAnnotations()[OmittedResultsAnnotation]; got != tt.wantOmitted {
				t.Errorf("omitted = %q, want %q", got, tt.wantOmitted)
			}
		})
	}
}

// TestReportsSkippedWithoutCRD: without the CRDs the writer says so once
// and writes nothing (it has no client to write with).
func TestReportsSkippedWithoutCRD(t *testing.T) {
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	s, _ := newTestState(t)
	w := &reportWriter{mapper: meta.NewDefaultRESTMapper(nil), state: s, installed: map[schema.GroupVersionKind]bool{},
		listed: map[schema.GroupVersionKind]bool{}, written: map[writtenKey]string{}}
	for range 3 {
		w.discover(context.Background(), log)
	}
	if len(lines) != 4 || !strings.Contains(lines[0], "Report CRD not installed") {
		t.Fatalf("log lines %q, want one per report kind (2 APIs), once", lines)
	}
	s.set(podKey("a", "x"), podRef("a", "x"), []violation{{Policy: "p", Action: policy.ActionDeny, Message: "m"}}, 0)
	for ns, entries := range s.takeDirty() {
		if err := w.sync(context.Background(), ns, entries, 10); err != nil {
			t.Fatal(err)
		}
	}
}
