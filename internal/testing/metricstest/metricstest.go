// Package metricstest reads metric values from a Prometheus registry, for
// tests.
package metricstest

import "github.com/prometheus/client_golang/prometheus"

// Value returns the value of the first series of the counter or gauge name
// in reg whose labels include labels; 0 when there is none (a series that
// was never set, or was deleted).
func Value(reg prometheus.Gatherer, name string, labels map[string]string) (float64, error) {
	values, err := Values(reg, name, labels)
	if err != nil || len(values) == 0 {
		return 0, err
	}
	return values[0], nil
}

// Values returns the values of every series of the counter or gauge name in
// reg whose labels include labels: none when there is no such series.
func Values(reg prometheus.Gatherer, name string, labels map[string]string) ([]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	var out []float64
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
				out = append(out, g.GetValue())
			} else {
				out = append(out, m.GetCounter().GetValue())
			}
		}
	}
	return out, nil
}
