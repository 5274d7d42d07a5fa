package audit

import (
	"context"
	"fmt"
	"slices"
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
		added, _ := s.set(st.key, st.ref, append([]violation(nil), st.violations...), 0)
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
	owned := func(name, owner string, vs ...violation) entry {
		ref := *podRef("ns", name)
		ref.OwnerAPIVersion, ref.OwnerKind, ref.OwnerName, ref.OwnerUID = "apps/v1", "DaemonSet", owner, types.UID("ds-"+owner)
		return entry{ref: ref, violations: vs}
	}
	deny := func(id policy.ID) violation {
		return violation{Policy: id, Mode: policy.Enforce, Action: policy.ActionDeny, Rule: "r1", Message: "[" + string(id) + "] bad", Since: since}
	}
	warn := func(id policy.ID) violation {
		return violation{Policy: id, Mode: policy.Audit, Action: policy.ActionWarn, Message: "[" + string(id) + "] meh", Since: since}
	}
	var bare, daemonSet, mixed []entry
	for i := range 1000 {
		bare = append(bare, mk(fmt.Sprintf("p-%04d", i), 1, deny("host-network-endpoint")))
		daemonSet = append(daemonSet, owned(fmt.Sprintf("cilium-%04d", i), "cilium", deny("host-network-endpoint")))
	}
	mixed = append(append(mixed, bare...), mk("kv", 0, warn("kube-vip-ipvs-backends")), mk("ap", 0, warn("apiserver-probe-host")))
	tests := []struct {
		name        string
		entries     []entry
		limit       int
		wantNil     bool
		wantSummary map[string]int64
		wantResults []string // policy/result/kind/name/objects, in order; "..." skips the middle
		wantScope   string
	}{
		{name: "nothing to report", entries: []entry{mk("a", 3)}, limit: 10, wantNil: true},
		{name: "failures first, then by policy and name; passes are not listed, so not counted", limit: 10,
			entries: []entry{mk("b", 1, warn("kube-proxy-readiness-probe")),
				mk("a", 0, deny("kube-vip-ipvs-backends"), warn("apiserver-probe-host")), mk("c", 2)},
			wantSummary: map[string]int64{"pass": 0, "fail": 1, "warn": 2, "error": 0, "skip": 0},
			wantResults: []string{"kube-vip-ipvs-backends/fail/Pod/a/", "apiserver-probe-host/warn/Pod/a/", "kube-proxy-readiness-probe/warn/Pod/b/"}},
		{name: "one object: the report's scope", limit: 10, entries: []entry{mk("a", 0, deny("kube-vip-ipvs-backends"), warn("apiserver-probe-host"))},
			wantSummary: map[string]int64{"fail": 1, "warn": 1}, wantScope: "a"},
		{name: "1,000 pods of a DaemonSet over the cap: one result about the DaemonSet", entries: daemonSet, limit: 100,
			wantSummary: map[string]int64{"fail": 1},
			wantResults: []string{"host-network-endpoint/fail/DaemonSet/cilium/1000"}, wantScope: "cilium?"},
		{name: "1,000 bare pods over the cap: 99 listed, the 100th counts the other 901", entries: bare, limit: 100,
			wantSummary: map[string]int64{"fail": 100},
			wantResults: []string{"host-network-endpoint/fail/Pod/p-0000/", "...", "host-network-endpoint/fail/-/-/901"}},
		{name: "a cap never hides a (policy, result) pair", entries: mixed, limit: 100,
			wantSummary: map[string]int64{"fail": 98, "warn": 2},
			wantResults: []string{"host-network-endpoint/fail/Pod/p-0000/", "...", "host-network-endpoint/fail/-/-/903",
				"apiserver-probe-host/warn/Pod/ap/", "kube-vip-ipvs-backends/warn/Pod/kv/"}},
		{name: "more pairs than the cap: one result each", entries: mixed, limit: 2,
			wantSummary: map[string]int64{"fail": 1, "warn": 2},
			wantResults: []string{"host-network-endpoint/fail/-/-/1000", "apiserver-probe-host/warn/Pod/ap/", "kube-vip-ipvs-backends/warn/Pod/kv/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := buildReport(reportAPIs[0], "ns", tt.entries, tt.limit, nil)
			if tt.wantNil {
				if r != nil {
					t.Fatalf("report = %v, want none", r.Object)
				}
				return
			}
			if r.GetName() != ReportName || r.GetNamespace() != "ns" || r.GetLabels()[ManagedByLabel] != "endpoint-policy" {
				t.Errorf("report %s/%s labels %v", r.GetNamespace(), r.GetName(), r.GetLabels())
			}
			results, _, _ := unstructured.NestedSlice(r.Object, "results")
			// What a viewer counts from the results is the summary.
			counted := map[string]int64{}
			var got []string
			for _, res := range results {
				m := res.(map[string]any)
				counted[m["result"].(string)]++
				ref := map[string]any{"kind": "-", "name": "-"} // none: an aggregate over the cap
				if resources, ok := m["resources"].([]any); ok {
					ref = resources[0].(map[string]any)
				}
				objects, _ := m["properties"].(map[string]any)["objects"].(string)
				got = append(got, fmt.Sprintf("%s/%s/%s/%s/%s", m["policy"], m["result"], ref["kind"], ref["name"], objects))
				if m["severity"] == "" || m["category"] == "" {
					t.Errorf("result %v has no severity or category", m)
				}
				if len(m["message"].(string)) > policy.MaxNoteBytes {
					t.Errorf("message of %d bytes", len(m["message"].(string)))
				}
			}
			for k, want := range tt.wantSummary {
				if got, _, _ := unstructured.NestedInt64(r.Object, "summary", k); got != want {
					t.Errorf("summary.%s = %d, want %d", k, got, want)
				}
				if counted[k] != want {
					t.Errorf("%d %s results listed, summary says %d", counted[k], k, want)
				}
			}
			if len(results) > max(tt.limit, 3) {
				t.Errorf("%d results, limit %d", len(results), tt.limit)
			}
			if tt.wantResults != nil {
				if i := slices.Index(tt.wantResults, "..."); i >= 0 {
					head, tail := tt.wantResults[:i], tt.wantResults[i+1:]
					if len(got) < len(head)+len(tail) || !slices.Equal(got[:len(head)], head) || !slices.Equal(got[len(got)-len(tail):], tail) {
						t.Errorf("results %v ... %v, want %v ... %v", got[:min(len(got), len(head))], got[max(0, len(got)-len(tail)):], head, tail)
					}
				} else if !slices.Equal(got, tt.wantResults) {
					t.Errorf("results %v, want %v", got, tt.wantResults)
				}
				first := results[0].(map[string]any)
				if first["timestamp"].(map[string]any)["seconds"] != since.Unix() {
					t.Errorf("first result %v: want the time first seen", first)
				}
			}
			scope, _, _ := unstructured.NestedString(r.Object, "scope", "name")
			if want := strings.TrimSuffix(tt.wantScope, "?"); want != scope && !strings.HasSuffix(tt.wantScope, "?") {
				t.Errorf("scope %q, want %q", scope, tt.wantScope)
			}
		})
	}
}

// A result unchanged across a restart keeps the time the report it was
// found in says it was first seen; a changed one does not.
func TestBuildReportKeepsPriorTimes(t *testing.T) {
	before, now := time.Unix(1000, 0), time.Unix(5000, 0)
	e := entry{ref: *podRef("ns", "a"), violations: []violation{
		{Policy: "p", Action: policy.ActionDeny, Message: "same", Since: now},
		{Policy: "q", Action: policy.ActionDeny, Message: "changed", Since: now},
	}}
	prior := priorTimes{}
	prior.add(map[string]any{"results": []any{
		map[string]any{"policy": "p", "result": "fail", "message": "same", "timestamp": map[string]any{"seconds": int64(1000)},
			"resources": []any{map[string]any{"uid": "ns/a"}}},
		map[string]any{"policy": "q", "result": "fail", "message": "was different", "timestamp": map[string]any{"seconds": int64(1000)},
			"resources": []any{map[string]any{"uid": "ns/a"}}},
	}})
	r := buildReport(reportAPIs[1], "ns", []entry{e}, 10, prior)
	results, _, _ := unstructured.NestedSlice(r.Object, "results")
	times := map[string]int64{}
	for _, res := range results {
		m := res.(map[string]any)
		times[m["policy"].(string)] = m["timestamp"].(map[string]any)["seconds"].(int64)
	}
	if times["p"] != before.Unix() || times["q"] != now.Unix() {
		t.Errorf("timestamps %v: want p's kept from the earlier report (%d), q's new (%d)", times, before.Unix(), now.Unix())
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
