// Package metrics holds endpoint-policy's own Prometheus metrics. They are
// served beside controller-runtime's (controller_runtime_webhook_* for request
// counts and latencies), which this package does not duplicate.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// Action is what admission did for one policy on one object.
type Action string

const (
	ActionMutate Action = "mutate"
	ActionDeny   Action = "deny"
	ActionWarn   Action = "warn"
	ActionAllow  Action = "allow"
)

// Recorder records endpoint-policy's metrics.
type Recorder struct {
	decisions     *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	reloadSuccess prometheus.Gauge
}

// NewRecorder creates the metrics and registers them with reg.
func NewRecorder(reg prometheus.Registerer) (*Recorder, error) {
	r := &Recorder{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_policy_admission_decisions_total",
			Help: "Admission decisions by policy and action (mutate, deny, warn, allow).",
		}, []string{"policy", "action"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_policy_config_reloads_total",
			Help: "Policy configuration file reload attempts by result (success, error).",
		}, []string{"result"}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "endpoint_policy_config_last_reload_successful",
			Help: "1 when the last policy configuration reload succeeded (or none happened), 0 when the file in place is invalid and an older configuration is in force.",
		}),
	}
	var err error
	if r.decisions, err = register(reg, r.decisions); err != nil {
		return nil, err
	}
	if r.reloads, err = register(reg, r.reloads); err != nil {
		return nil, err
	}
	if r.reloadSuccess, err = register(reg, r.reloadSuccess); err != nil {
		return nil, err
	}
	r.reloadSuccess.Set(1)
	return r, nil
}

// Decision counts one admission decision.
func (r *Recorder) Decision(id policy.ID, a Action) {
	r.decisions.WithLabelValues(string(id), string(a)).Inc()
}

// ConfigReload records the outcome of a configuration reload.
func (r *Recorder) ConfigReload(err error) {
	if err != nil {
		r.reloads.WithLabelValues("error").Inc()
		r.reloadSuccess.Set(0)
		return
	}
	r.reloads.WithLabelValues("success").Inc()
	r.reloadSuccess.Set(1)
}

// register registers c, or returns the identical collector registered before
// (a server started twice in one process, as tests do).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
