package check

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

func TestCompareAndCount(t *testing.T) {
	f := func(id policy.ID, a policy.Action, name string) Finding {
		return Finding{Policy: id, Action: a, Kind: "DaemonSet", Namespace: "kube-system", Name: name}
	}
	inForce := Report{Findings: []Finding{f("kube-vip-ipvs-backends", "warn", "kube-vip"), f("p", "deny", "gone"), f("p", "warn", "same")}}
	candidate := Report{Findings: []Finding{
		f("kube-vip-ipvs-backends", "deny", "kube-vip"), f("kube-vip-ipvs-backends", "deny", "kube-vip"), // two findings, one verdict
		f("p", "warn", "same"), f("p", "mutate", "new"),
	}}
	candidate.Compare(inForce, "endpoint-policy/endpoint-policy-config")
	want := []Change{
		{Policy: "kube-vip-ipvs-backends", Kind: "DaemonSet", Namespace: "kube-system", Name: "kube-vip", InForce: "warn", Candidate: "deny"},
		{Policy: "p", Kind: "DaemonSet", Namespace: "kube-system", Name: "gone", InForce: "deny", Candidate: "allow"},
		{Policy: "p", Kind: "DaemonSet", Namespace: "kube-system", Name: "new", InForce: "allow", Candidate: "mutate"},
	}
	if diff := cmp.Diff(want, candidate.Changes); diff != "" {
		t.Errorf("Changes (-want +got):\n%s", diff)
	}
	candidate.CountPolicies()
	if diff := cmp.Diff(map[policy.ID]map[policy.Action]int{"kube-vip-ipvs-backends": {"deny": 2}, "p": {"warn": 1, "mutate": 1}}, candidate.Policies); diff != "" {
		t.Errorf("Policies (-want +got):\n%s", diff)
	}
	// Nothing changes: compared, and said so (an empty list, not none).
	same := Report{Findings: inForce.Findings}
	same.Compare(inForce, "x/y")
	if same.InForce != "x/y" || same.Changes == nil || len(same.Changes) != 0 {
		t.Errorf("no change: InForce %q, Changes %v", same.InForce, same.Changes)
	}
}
