// Package metricstest reads metric values from a Prometheus registry, for
// tests.
package metricstest

import "github.com/prometheus/client_golang/prometheus"

// Value returns the value of the first series of the counter or gauge name
// in reg whose labels include labels; 0 when there is none (a series that
// was never set, or was deleted).
func Value(reg prometheus.Gatherer, name string, labels map[string]string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), nil
			}
			return m.GetCounter().GetValue(), nil
		}
	}
	return 0, nil
}
