package webhook

import "github.com/prometheus/client_golang/prometheus"

// DecisionCount reads endpoint_policy_admission_decisions_total{policy,action}
// from reg; 0 when the series does not exist.
func DecisionCount(reg prometheus.Gatherer, policyID, action string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "endpoint_policy_admission_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["policy"] == policyID && labels["action"] == action {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
