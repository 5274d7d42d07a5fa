package audit

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// Reports that never cry wolf (issue 34): what a Policy Reporter user is
// notified of must be a change of the cluster, not of a count.

// resultKey names a result: its object ("aggregate" for the one over the
// cap, which has none), its policy and its outcome.
func resultKey(m map[string]any) string {
	key := "aggregate"
	if resources, ok := m["resources"].([]any); ok {
		ref := resources[0].(map[string]any)
		key = ref["kind"].(string) + "/" + ref["name"].(string)
	}
	return key + " " + m["policy"].(string) + " " + m["result"].(string)
}

// resultMessages are a report's results' messages, by resultKey.
func resultMessages(t *testing.T, r *unstructured.Unstructured) map[string]string {
	t.Helper()
	results, _, _ := unstructured.NestedSlice(r.Object, "results")
	out := map[string]string{}
	for _, res := range results {
		m := res.(map[string]any)
		key := resultKey(m)
		if _, dup := out[key]; dup {
			t.Fatalf("two results for %s", key)
		}
		out[key] = m["message"].(string)
	}
	return out
}

// propertiesOf returns the properties of the result key names.
func propertiesOf(t *testing.T, r *unstructured.Unstructured, key string) map[string]any {
	t.Helper()
	results, _, _ := unstructured.NestedSlice(r.Object, "results")
	for _, res := range results {
		if m := res.(map[string]any); resultKey(m) == key {
			return m["properties"].(map[string]any)
		}
	}
	t.Fatalf("no result %s", key)
	return nil
}

// Deleting one capped object leaves every other result's message, and the
// aggregate's, byte-identical; only the aggregate's properties change.
func TestAggregatesKeepTheirMessage(t *testing.T) {
	since := time.Unix(1700000000, 0)
	bad := func(msg string) violation {
		return violation{Policy: "host-network-endpoint", Mode: policy.Enforce, Action: policy.ActionMutate, Rule: "service-host-env", Message: msg, Since: since}
	}
	bare := func(n int) []entry {
		var es []entry
		for i := range n {
			es = append(es, entry{ref: *podRef("ns", fmt.Sprintf("p-%04d", i)), violations: []violation{bad("[host-network-endpoint] would set X")}})
		}
		// A second policy beside it, listed whole.
		return append(es, entry{ref: *podRef("ns", "kv"), violations: []violation{{Policy: "kube-vip-ipvs-backends", Mode: policy.Enforce,
			Action: policy.ActionDeny, Message: "[kube-vip-ipvs-backends] bad", Since: since}}})
	}
	owned := func(n int) []entry {
		var es []entry
		for i := range n {
			ref := *podRef("ns", fmt.Sprintf("node-agent-%04d", i))
			ref.OwnerAPIVersion, ref.OwnerKind, ref.OwnerName, ref.OwnerUID = "apps/v1", "DaemonSet", "node-agent", "ds-node-agent"
			// The pods' messages differ in one pod: the aggregate says what
			// most of them say.
			msg := "[host-network-endpoint] would set X"
			if i == 7 {
				msg = "[host-network-endpoint] would set Y"
			}
			es = append(es, entry{ref: ref, violations: []violation{bad(msg)}})
		}
		return es
	}
	for _, tt := range []struct {
		name      string
		before    []entry
		delete    int // index of the entry deleted
		aggregate string
		objects   [2]string // properties.objects before and after
	}{
		// 10 results: kube-vip's, 8 pods listed and the 22 others counted.
		{name: "bare pods over the cap (the last result counts the rest)", before: bare(30), delete: 25,
			aggregate: "aggregate host-network-endpoint fail", objects: [2]string{"22", "21"}},
		{name: "the first object of the aggregate deleted", before: bare(30), delete: 8,
			aggregate: "aggregate host-network-endpoint fail", objects: [2]string{"22", "21"}},
		{name: "30 pods of DaemonSet node-agent", before: owned(30), delete: 0,
			aggregate: "DaemonSet/node-agent host-network-endpoint fail", objects: [2]string{"30", "29"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := buildReport(reportAPIs[0], "ns", tt.before, 10, nil)
			after := buildReport(reportAPIs[0], "ns", slices.Delete(slices.Clone(tt.before), tt.delete, tt.delete+1), 10, nil)
			got, want := resultMessages(t, after), resultMessages(t, before)
			deleted := tt.before[tt.delete].ref
			delete(want, deleted.Kind+"/"+deleted.Name+" host-network-endpoint fail")
			if !maps.Equal(got, want) {
				t.Errorf("messages after one object went:\n%v\nbefore:\n%v", got, want)
			}
			if _, ok := want[tt.aggregate]; !ok {
				t.Fatalf("no aggregate %s in %v", tt.aggregate, want)
			}
			for i, r := range []*unstructured.Unstructured{before, after} {
				props := propertiesOf(t, r, tt.aggregate)
				if props["objects"] != tt.objects[i] || props["objectNames"] == "" {
					t.Errorf("properties %v, want objects %s and the names", props, tt.objects[i])
				}
			}
		})
	}
}

// After a restart, an aggregate keeps the first-seen time of the report
// found at start, like every other result, not the restart's time.
func TestAggregateTimestampKeptAcrossRestart(t *testing.T) {
	first, restart := time.Unix(1000, 0), time.Unix(5000, 0)
	entries := func(since time.Time) []entry {
		var es []entry
		for i := range 30 {
			es = append(es, entry{ref: *podRef("ns", fmt.Sprintf("p-%04d", i)), violations: []violation{{Policy: "host-network-endpoint",
				Mode: policy.Enforce, Action: policy.ActionMutate, Message: "[host-network-endpoint] would set X", Since: since}}})
			ref := *podRef("ns", fmt.Sprintf("agent-%04d", i))
			ref.OwnerAPIVersion, ref.OwnerKind, ref.OwnerName, ref.OwnerUID = "apps/v1", "DaemonSet", "agent", types.UID("ds-agent")
			es = append(es, entry{ref: ref, violations: []violation{{Policy: "apiserver-probe-host",
				Mode: policy.Audit, Action: policy.ActionWarn, Message: "[apiserver-probe-host] meh", Since: since}}})
		}
		return es
	}
	found := buildReport(reportAPIs[0], "ns", entries(first), 10, nil)
	prior := priorTimes{}
	prior.add(found.Object)
	rebuilt := buildReport(reportAPIs[0], "ns", entries(restart), 10, prior)
	results, _, _ := unstructured.NestedSlice(rebuilt.Object, "results")
	aggregates := 0
	for _, res := range results {
		m := res.(map[string]any)
		if m["properties"].(map[string]any)["objects"] != nil {
			aggregates++
		}
		if got := m["timestamp"].(map[string]any)["seconds"]; got != first.Unix() {
			t.Errorf("result %q: timestamp %v, want the first-seen %d", m["message"], got, first.Unix())
		}
	}
	if aggregates != 2 {
		t.Errorf("%d aggregates, want 2 (the DaemonSet's pods, the bare pods over the cap)", aggregates)
	}
}

// A workload whose template pins the address and whose pods run with it is
// one thing to fix: one result about the workload, failing with its pods,
// not a template warning beside a failure per pod.
func TestTemplateAndItsPodsAreOneResult(t *testing.T) {
	since := time.Unix(1700000000, 0)
	ds := objectRef{APIVersion: "apps/v1", Kind: "DaemonSet", Namespace: "ns", Name: "node-agent", UID: "ds-node-agent"}
	entries := []entry{{ref: ds, violations: []violation{{Policy: "host-network-endpoint", Mode: policy.Enforce, Action: policy.ActionMutate,
		Rule: "pod-template", Template: true, Message: "[host-network-endpoint] pods created from this template will be rewritten: set X", Since: since}}}}
	for i := range 30 {
		ref := *podRef("ns", fmt.Sprintf("node-agent-%04d", i))
		ref.OwnerAPIVersion, ref.OwnerKind, ref.OwnerName, ref.OwnerUID = ds.APIVersion, ds.Kind, ds.Name, ds.UID
		entries = append(entries, entry{ref: ref, violations: []violation{{Policy: "host-network-endpoint", Mode: policy.Enforce,
			Action: policy.ActionMutate, Rule: "service-host-env", Message: "[host-network-endpoint] would set X", Since: since}}})
	}
	// A template alone (no pods yet) is a warning.
	alone := buildReport(reportAPIs[0], "ns", entries[:1], 100, nil)
	if got := resultMessages(t, alone); len(got) != 1 || got["DaemonSet/node-agent host-network-endpoint warn"] == "" {
		t.Errorf("template alone: %v, want one warning", got)
	}
	for _, limit := range []int{100, 10} {
		r := buildReport(reportAPIs[0], "ns", entries, limit, nil)
		got := resultMessages(t, r)
		if len(got) != 1 || got["DaemonSet/node-agent host-network-endpoint fail"] == "" {
			t.Errorf("limit %d: results %v, want one failure about the DaemonSet", limit, got)
			continue
		}
		if props := propertiesOf(t, r, "DaemonSet/node-agent host-network-endpoint fail"); props["objects"] != "31" {
			t.Errorf("limit %d: properties %v, want the template and its 30 pods", limit, props)
		}
	}
}

// Auto writes one report API: OpenReports where it is served, else
// wgpolicyk8s.io; the explicit values write what they name.
func TestReportAPIAutoSelectsOne(t *testing.T) {
	for _, tt := range []struct {
		selected   string
		openServed bool
		want       []string
	}{
		{"Auto", true, []string{"openreports.io"}},
		{"Auto", false, []string{"wgpolicyk8s.io"}},
		{"", true, []string{"openreports.io"}},
		{"wgpolicyk8s.io", true, []string{"wgpolicyk8s.io"}},
		{"openreports.io", false, []string{"openreports.io"}},
	} {
		w := &reportWriter{selected: config.ReportAPI(tt.selected), installed: map[schema.GroupVersionKind]bool{ReportGVK: tt.openServed, PolicyReportGVK: true}}
		var got []string
		for _, api := range reportAPIs {
			if w.isSelected(api) {
				got = append(got, string(api.name))
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("reportAPI %q, OpenReports served %v: writes %v, want %v", tt.selected, tt.openServed, got, tt.want)
		}
	}
}
