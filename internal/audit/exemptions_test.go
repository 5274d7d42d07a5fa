package audit

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

func matchesValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, err := metricstest.Value(reg, "endpoint_policy_exemption_matches", map[string]string{"exemption": name})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// An exempted violation is a skip: counted in its exemption's matches, not
// in the violation gauge, never announced as a violation; when its
// exemption has expired and the violation is back, it has lapsed.
func TestStateCountsExemptionsApart(t *testing.T) {
	s, reg := newTestState(t)
	live := &policy.Exemption{Name: "kube-vip-upgrade", Policies: []policy.ID{"p"}, Reason: "CHG-4711", Expires: time.Now().Add(time.Hour)}
	const unused = "exemptions[1]"
	s.setExemptions([]string{live.Name, unused})
	if got, err := metricstest.Values(reg, "endpoint_policy_exemption_matches", map[string]string{"exemption": unused}); err != nil || !cmp.Equal(got, []float64{0}) {
		t.Errorf("an exemption that matches nothing: %v (%v), want a series at 0", got, err)
	}
	exempt := violation{Policy: "p", Mode: policy.Enforce, Action: policy.ActionExempt, Message: "[p] exempted: CHG-4711; bad", Exemption: live}
	deny := violation{Policy: "p", Mode: policy.Enforce, Action: policy.ActionDeny, Message: "[p] bad"}

	added, _ := s.set(podKey("a", "x"), podRef("a", "x"), []violation{exempt}, 0)
	if len(added) != 1 {
		t.Errorf("added = %d, want 1 (the announcer skips exempted ones)", len(added))
	}
	s.set(podKey("a", "y"), podRef("a", "y"), []violation{exempt}, 0)
	if got := gaugeValue(t, reg, "p", "a", "Pod"); got != 0 {
		t.Errorf("violation gauge = %v, want 0: exempted objects are not violations", got)
	}
	if got := matchesValue(t, reg, live.Name); got != 2 {
		t.Errorf("matches = %v, want 2", got)
	}
	if got := s.unmatched(); !cmp.Equal(got, []string{unused}) {
		t.Errorf("unmatched = %v, want [%s]", got, unused)
	}

	// Still live: the same object denied again (the exemption removed by a
	// reload) has not lapsed.
	if _, lapsed := s.set(podKey("a", "y"), podRef("a", "y"), []violation{deny}, 0); len(lapsed) != 0 {
		t.Errorf("lapsed = %v, want none: the exemption has not expired", lapsed)
	}
	live.Expires = time.Now().Add(-time.Second)
	_, lapsed := s.set(podKey("a", "x"), podRef("a", "x"), []violation{deny}, 0)
	if len(lapsed) != 1 || lapsed[0].Exemption != live {
		t.Errorf("lapsed = %v, want the expired exemption's violation", lapsed)
	}
	if got := gaugeValue(t, reg, "p", "a", "Pod"); got != 2 {
		t.Errorf("violation gauge after the expiry = %v, want 2", got)
	}
	if got := matchesValue(t, reg, live.Name); got != 0 {
		t.Errorf("matches after the expiry = %v, want 0", got)
	}
	// A configuration without it: its series goes.
	s.setExemptions(nil)
	if got, err := metricstest.Values(reg, "endpoint_policy_exemption_matches", nil); err != nil || len(got) != 0 {
		t.Errorf("matches series after the exemptions went: %v (%v), want none", got, err)
	}
}

func TestReportShowsExemptionsAsSkip(t *testing.T) {
	since := time.Unix(1700000000, 0)
	x := &policy.Exemption{Name: "kube-vip-upgrade", Reason: "CHG-4711", Expires: time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC)}
	entries := []entry{
		{ref: *podRef("ns", "a"), violations: []violation{{Policy: "kube-vip-ipvs-backends", Mode: policy.Enforce, Action: policy.ActionExempt,
			Message: "[kube-vip-ipvs-backends] exempted: CHG-4711 (until 2026-12-20T00:00:00Z); bad", Since: since, Exemption: x}}},
		{ref: *podRef("ns", "b"), violations: []violation{{Policy: "kube-vip-ipvs-backends", Mode: policy.Enforce, Action: policy.ActionDeny,
			Message: "[kube-vip-ipvs-backends] bad", Since: since}}},
	}
	for _, api := range reportAPIs {
		r := buildReport(api, "ns", entries, 10, nil)
		results, _ := r.Object["results"].([]any)
		if len(results) != 2 {
			t.Fatalf("%s: %d results, want 2", api.name, len(results))
		}
		skip := results[1].(map[string]any)
		if skip["result"] != "skip" || skip["message"] != entries[0].violations[0].Message {
			t.Errorf("%s: second result %v, want the skip with the reason in its message", api.name, skip)
		}
		want := map[string]any{"action": "exempt", "mode": "Enforce", "exemption": "kube-vip-upgrade", "expires": "2026-12-20T00:00:00Z"}
		if diff := cmp.Diff(want, skip["properties"]); diff != "" {
			t.Errorf("%s: properties (-want +got):\n%s", api.name, diff)
		}
		summary := r.Object["summary"].(map[string]any)
		if summary["skip"] != int64(1) || summary["fail"] != int64(1) {
			t.Errorf("%s: summary %v, want fail 1, skip 1", api.name, summary)
		}
	}
}
