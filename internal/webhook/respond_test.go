package webhook

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gomodules.xyz/jsonpatch/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// The adaptor from engine results to admission responses is shared by every
// admission handler; these cases cover the validating paths that the first
// (mutating) policy does not reach.
func TestDecideAndRespond(t *testing.T) {
	violation := policy.Finding{Field: field.NewPath("spec", "x"), Message: "x is wrong"}
	mutation := policy.Finding{
		Message:     "set y",
		Patch:       []jsonpatch.Operation{{Operation: "add", Path: "/spec/y", Value: "1"}},
		Annotations: map[string]string{"example.io/b": "2", "example.io/a": "1"},
	}
	tests := []struct {
		name             string
		results          []policy.Result
		canDeny          bool
		at               annotationsAt
		wantAllowed      bool
		wantCode         int32
		wantMessage      string
		wantCauses       []metav1.StatusCause
		wantPatch        []jsonpatch.Operation
		wantWarnings     []string
		wantAudit        map[string]string
		wantDecisionsFor map[string]float64 // "policy/action" -> count
	}{
		{
			name: "an advisory finding of a mutating rule warns in Enforce, never patches or denies",
			results: []policy.Result{{Policy: "m", Mode: policy.Enforce, Findings: []policy.Finding{
				{Field: field.NewPath("spec", "env"), Message: "comes from ConfigMap a/b", Advisory: true}}}},
			canDeny: true, wantAllowed: true, wantCode: http.StatusOK,
			wantWarnings:     []string{"[m] spec.env: comes from ConfigMap a/b"},
			wantAudit:        map[string]string{"m": "[m] spec.env: comes from ConfigMap a/b"},
			wantDecisionsFor: map[string]float64{"m/warn": 1},
		},
		{
			name: "an advisory finding beside a change: the change is made, the advisory said",
			results: []policy.Result{{Policy: "m", Mode: policy.Enforce, Findings: []policy.Finding{
				{Message: "set y", Patch: []jsonpatch.Operation{{Operation: "add", Path: "/spec/y", Value: "1"}}},
				{Field: field.NewPath("spec", "env"), Message: "comes from ConfigMap a/b", Advisory: true}}}},
			canDeny: true, wantAllowed: true, wantCode: http.StatusOK,
			wantPatch:        []jsonpatch.Operation{{Operation: "add", Path: "/spec/y", Value: "1"}},
			wantWarnings:     []string{"[m] spec.env: comes from ConfigMap a/b"},
			wantDecisionsFor: map[string]float64{"m/mutate": 1},
		},
		{
			name: "an exempted violation in Enforce warns with the reason and is not denied",
			results: []policy.Result{{Policy: "v", Mode: policy.Enforce, Findings: []policy.Finding{violation},
				Exemption: &policy.Exemption{Name: "exemptions[0]", Reason: "CHG-4711", Expires: time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC)}}},
			canDeny: true, wantAllowed: true, wantCode: http.StatusOK,
			wantWarnings:     []string{"[v] exempted: CHG-4711 (until 2026-12-20T00:00:00Z)"},
			wantAudit:        map[string]string{"v": "[v] exempted: CHG-4711 (until 2026-12-20T00:00:00Z); spec.x: x is wrong"},
			wantDecisionsFor: map[string]float64{"v/exempt": 1},
		},
		{
			name: "an exempted change is not made; another policy's denial stands",
			results: []policy.Result{
				{Policy: "m", Mode: policy.Enforce, Findings: []policy.Finding{mutation}, Exemption: &policy.Exemption{Name: "x", Reason: "static by design"}},
				{Policy: "v", Mode: policy.Enforce, Findings: []policy.Finding{violation}},
			},
			canDeny: true, wantAllowed: false, wantCode: http.StatusForbidden,
			wantMessage:      "[v] spec.x: x is wrong",
			wantCauses:       []metav1.StatusCause{{Type: "FieldValueForbidden", Field: "spec.x", Message: "[v] x is wrong"}},
			wantWarnings:     []string{"[m] exempted: static by design"},
			wantAudit:        map[string]string{"m": "[m] exempted: static by design; would set y"},
			wantDecisionsFor: map[string]float64{"m/exempt": 1, "v/deny": 1},
		},
		{
			name:    "enforced violation denies",
			results: []policy.Result{{Policy: "v", Mode: policy.Enforce, Findings: []policy.Finding{violation}}},
			canDeny: true, wantAllowed: false, wantCode: http.StatusForbidden,
			wantMessage:      "[v] spec.x: x is wrong",
			wantCauses:       []metav1.StatusCause{{Type: "FieldValueForbidden", Field: "spec.x", Message: "[v] x is wrong"}},
			wantDecisionsFor: map[string]float64{"v/deny": 1},
		},
		{
			name:    "enforced violation on an object that must not be denied warns",
			results: []policy.Result{{Policy: "v", Mode: policy.Enforce, Findings: []policy.Finding{violation}}},
			canDeny: false, wantAllowed: true, wantCode: http.StatusOK,
			wantWarnings:     []string{"[v] spec.x: x is wrong"},
			wantAudit:        map[string]string{"v": "[v] spec.x: x is wrong"},
			wantDecisionsFor: map[string]float64{"v/warn": 1},
		},
		{
			name:    "audited violation warns",
			results: []policy.Result{{Policy: "v", Mode: policy.Audit, Findings: []policy.Finding{violation, violation}}},
			canDeny: true, wantAllowed: true, wantCode: http.StatusOK,
			wantWarnings:     []string{"[v] spec.x: x is wrong", "[v] spec.x: x is wrong"},
			wantAudit:        map[string]string{"v": "[v] spec.x: x is wrong; [v] spec.x: x is wrong"},
			wantDecisionsFor: map[string]float64{"v/warn": 1},
		},
		{
			name: "a denial keeps the other policies' warnings",
			results: []policy.Result{
				{Policy: "v", Mode: policy.Enforce, Findings: []policy.Finding{violation}},
				{Policy: "m", Mode: policy.Audit, Findings: []policy.Finding{mutation}},
				{Policy: "ok", Mode: policy.Enforce},
			},
			canDeny: true, wantAllowed: false, wantCode: http.StatusForbidden,
			wantMessage:      "[v] spec.x: x is wrong",
			wantWarnings:     []string{"[m] would set y"},
			wantAudit:        map[string]string{"m": "[m] would set y"},
			wantDecisionsFor: map[string]float64{"v/deny": 1, "m/warn": 1, "ok/allow": 1},
		},
		{
			name:    "mutation with annotations on an object without annotations",
			results: []policy.Result{{Policy: "m", Mode: policy.Enforce, Findings: []policy.Finding{mutation}}},
			canDeny: true, wantAllowed: true, wantCode: http.StatusOK,
			wantPatch: []jsonpatch.Operation{
				{Operation: "add", Path: "/spec/y", Value: "1"},
				{Operation: "add", Path: "/metadata/annotations", Value: map[string]string{"example.io/a": "1", "example.io/b": "2"}},
			},
			wantDecisionsFor: map[string]float64{"m/mutate": 1},
		},
		{
			name:    "mutation with annotations on an object with annotations: one op per key, sorted",
			results: []policy.Result{{Policy: "m", Mode: policy.Enforce, Findings: []policy.Finding{mutation, mutation}}},
			canDeny: true, at: annotationsMap, wantAllowed: true, wantCode: http.StatusOK,
			wantPatch: []jsonpatch.Operation{
				{Operation: "add", Path: "/spec/y", Value: "1"},
				{Operation: "add", Path: "/spec/y", Value: "1"},
				{Operation: "add", Path: "/metadata/annotations/example.io~1a", Value: "1"},
				{Operation: "add", Path: "/metadata/annotations/example.io~1b", Value: "2"},
			},
			wantDecisionsFor: map[string]float64{"m/mutate": 1},
		},
		{
			name: "removals: one op per key, deduplicated, after the additions",
			results: []policy.Result{{Policy: "m", Mode: policy.Enforce, Findings: []policy.Finding{
				{Message: "unset", RemoveAnnotations: []string{"example.io/z", "example.io/c"}},
				{Message: "unset again", RemoveAnnotations: []string{"example.io/z"}},
				{Message: "set", Annotations: map[string]string{"example.io/a": "1"}},
			}}},
			canDeny: true, at: annotationsMap, wantAllowed: true, wantCode: http.StatusOK,
			wantPatch: []jsonpatch.Operation{
				{Operation: "add", Path: "/metadata/annotations/example.io~1a", Value: "1"},
				{Operation: "remove", Path: "/metadata/annotations/example.io~1c"},
				{Operation: "remove", Path: "/metadata/annotations/example.io~1z"},
			},
			wantDecisionsFor: map[string]float64{"m/mutate": 1},
		},
		{
			name: "audited removal warns",
			results: []policy.Result{{Policy: "m", Mode: policy.Audit, Findings: []policy.Finding{
				{Message: "remove example.io/z", RemoveAnnotations: []string{"example.io/z"}},
			}}},
			canDeny: true, at: annotationsMap, wantAllowed: true, wantCode: http.StatusOK,
			wantWarnings:     []string{"[m] would remove example.io/z"},
			wantAudit:        map[string]string{"m": "[m] would remove example.io/z"},
			wantDecisionsFor: map[string]float64{"m/warn": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			rec, err := metrics.NewRecorder(reg)
			if err != nil {
				t.Fatal(err)
			}
			verdicts := make([]policy.Verdict, len(tt.results))
			for i, r := range tt.results {
				verdicts[i] = policy.Verdict{Result: r, Action: r.Action(tt.canDeny)}
			}
			resp := decide(verdicts, rec).response(tt.at)
			if resp.Allowed != tt.wantAllowed {
				t.Errorf("allowed = %v, want %v", resp.Allowed, tt.wantAllowed)
			}
			if resp.Result.Code != tt.wantCode || resp.Result.Message != tt.wantMessage {
				t.Errorf("result = %d %q, want %d %q", resp.Result.Code, resp.Result.Message, tt.wantCode, tt.wantMessage)
			}
			var causes []metav1.StatusCause
			if resp.Result.Details != nil {
				causes = resp.Result.Details.Causes
			}
			if tt.wantCauses != nil {
				if diff := cmp.Diff(tt.wantCauses, causes); diff != "" {
					t.Errorf("status.details.causes (-want +got):\n%s", diff)
				}
			} else if !tt.wantAllowed && len(causes) != 1 {
				t.Errorf("a denial of one finding has causes %v, want one", causes)
			}
			if diff := cmp.Diff(tt.wantPatch, resp.Patches); diff != "" {
				t.Errorf("patch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarnings, resp.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAudit, resp.AuditAnnotations); diff != "" {
				t.Errorf("audit annotations (-want +got):\n%s", diff)
			}
			if n, _ := testutil.GatherAndCount(reg, "endpoint_policy_admission_decisions_total"); n != len(tt.wantDecisionsFor) {
				t.Errorf("%d decision series, want %d", n, len(tt.wantDecisionsFor))
			}
			for key, want := range tt.wantDecisionsFor {
				id, action, _ := strings.Cut(key, "/")
				if got := DecisionCount(reg, id, action); got != want {
					t.Errorf("decisions{%s} = %v, want %v", key, got, want)
				}
			}
		})
	}
}
