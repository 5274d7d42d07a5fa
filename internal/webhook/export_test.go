package webhook

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

// DecisionCount reads endpoint_policy_admission_decisions_total{policy,action}
// from reg; 0 when the series does not exist.
func DecisionCount(reg prometheus.Gatherer, policyID, action string) float64 {
	v, _ := metricstest.Value(reg, "endpoint_policy_admission_decisions_total", map[string]string{"policy": policyID, "action": action})
	return v
}
