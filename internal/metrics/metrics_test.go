package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

// A mode change moves the policy's one series: an alert joining on
// mode="Enforce" must not see a policy twice, nor one no longer enforced.
func TestPolicyModes(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := NewRecorder(reg)
	if err != nil {
		t.Fatal(err)
	}
	r.PolicyModes(map[policy.ID]policy.Mode{"a": policy.Enforce, "b": policy.Audit})
	r.PolicyModes(map[policy.ID]policy.Mode{"a": policy.Audit, "b": policy.Audit})
	for _, tc := range []struct {
		id, mode string
		want     []float64
	}{
		{"a", "Enforce", nil},
		{"a", "Audit", []float64{1}},
		{"b", "Audit", []float64{1}},
	} {
		got, err := metricstest.Values(reg, "endpoint_policy_policy_mode", map[string]string{"policy": tc.id, "mode": tc.mode})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
			t.Errorf("%s %s: %v, want %v", tc.id, tc.mode, got, tc.want)
		}
	}
}

// A webhook no longer installed loses its series; the others keep theirs.
func TestWebhookConfigurationDrift(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := NewRecorder(reg)
	if err != nil {
		t.Fatal(err)
	}
	r.WebhookConfigurationDrift("a", "rules", true)
	r.WebhookConfigurationDrift("a", "caBundle", false)
	r.WebhookConfigurationDrift("b", "rules", false)
	r.ForgetWebhook("a")
	for _, tc := range []struct {
		webhook string
		want    []float64
	}{{"a", nil}, {"b", []float64{0}}} {
		got, err := metricstest.Values(reg, "endpoint_policy_webhook_configuration_drift", map[string]string{"webhook": tc.webhook})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.webhook, got, tc.want)
		}
	}
}
