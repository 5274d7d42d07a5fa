// Package metrics holds endpoint-policy's own Prometheus metrics. They are
// served beside controller-runtime's (controller_runtime_webhook_* for request
// counts and latencies), which this package does not duplicate.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// AnnotationAction is what the kube-proxy controller did with a pod's
// node-deleting annotations.
type AnnotationAction string

const (
	// AnnotationAdd: the annotations were set (Enforce).
	AnnotationAdd AnnotationAction = "add"
	// AnnotationRemove: the annotations were removed (the node is no longer
	// being deleted).
	AnnotationRemove AnnotationAction = "remove"
	// AnnotationWarn: the annotations would have been set (Audit).
	AnnotationWarn AnnotationAction = "warn"
)

// Recorder records endpoint-policy's metrics.
type Recorder struct {
	decisions           *prometheus.CounterVec
	reloads             *prometheus.CounterVec
	reloadSuccess       prometheus.Gauge
	nodeDeletingPods    prometheus.Gauge
	nodeDeletingPod     *prometheus.GaugeVec
	nodeDeletingChanges *prometheus.CounterVec
	violations          *prometheus.GaugeVec
	endpointNodes       *prometheus.GaugeVec
	policyMode          *prometheus.GaugeVec
	webhookDrift        *prometheus.GaugeVec
	exemptionExpiry     *prometheus.GaugeVec
	exemptionMatches    *prometheus.GaugeVec
}

// NewRecorder creates the metrics and registers them with reg.
func NewRecorder(reg prometheus.Registerer) (*Recorder, error) {
	r := &Recorder{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_policy_admission_decisions_total",
			Help: "Admission decisions by policy and action (mutate, deny, warn, unverified, exempt, allow).",
		}, []string{"policy", "action"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_policy_config_reloads_total",
			Help: "Policy configuration file reload attempts by result (success, error).",
		}, []string{"result"}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "endpoint_policy_config_last_reload_successful",
			Help: "1 when the last policy configuration reload succeeded (or none happened), 0 when the file in place is invalid and an older configuration is in force.",
		}),
		nodeDeletingPods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "endpoint_policy_kube_proxy_node_deleting_pods",
			Help: "kube-proxy pods that currently carry the endpoint-policy.io/node-deleting annotation (reported by the leader).",
		}),
		nodeDeletingPod: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "endpoint_policy_kube_proxy_node_deleting",
			Help: "1 for each kube-proxy pod that carries the endpoint-policy.io/node-deleting annotation: its node is being deleted (reason ToBeDeletedByClusterAutoscaler or NodeDeletion) and its /healthz fails on purpose. No series for other pods (reported by the leader).",
		}, []string{"namespace", "pod", "node", "reason"}),
		nodeDeletingChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_policy_kube_proxy_node_deleting_annotations_total",
			Help: "Changes to kube-proxy pods' node-deleting annotations by action: add, remove, warn (would have added, Audit).",
		}, []string{"action"}),
		violations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "endpoint_policy_violations",
			Help: "Objects in the cluster that currently violate a policy (or lack a mutation it would make), by policy, namespace and kind, as the background audit last saw them (reported by the leader).",
		}, []string{"policy", "namespace", "kind"}),
	}
	r.endpointNodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "endpoint_policy_endpoint_nodes",
		Help: "Nodes by the status of host-network-endpoint's endpoint on them, as the node agents last reported it (Verified, Unreachable, CertificateNotValidForHost, UnknownAuthority, NotReady, Unauthorized), or NoReport, Stale.",
	}, []string{"status"})
	r.policyMode = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "endpoint_policy_policy_mode",
		Help: "1 for each policy's effective mode in the configuration in force (Enforce, Audit or Disabled; a global Audit turns Enforce into Audit), for alerts that treat a violation of an Enforce policy differently.",
	}, []string{"policy", "mode"})
	r.webhookDrift = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "endpoint_policy_webhook_configuration_drift",
		Help: "1 when a field of one of endpoint-policy's webhooks differs from what was installed (namespaceSelector, objectSelector, matchConditions, rules, failurePolicy, timeoutSeconds; caBundle: it does not verify the serving certificate; webhook: the webhook or its configuration is gone), 0 when it matches (reported by the leader).",
	}, []string{"webhook", "field"})
	r.exemptionExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "endpoint_policy_exemption_expiry_timestamp_seconds",
		Help: "When each exemption of the configuration in force stops applying (Unix time), by exemption (its name, or exemptions[<index>]) and policy (* for every policy); no series for an exemption without an expiry.",
	}, []string{"exemption", "policy"})
	r.exemptionMatches = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "endpoint_policy_exemption_matches",
		Help: "Objects' policy results each exemption of the configuration in force currently exempts, as the background audit last saw them: 0 for an exemption that matches nothing, a stale entry (reported by the leader).",
	}, []string{"exemption"})
	var err error
	if r.exemptionExpiry, err = register(reg, r.exemptionExpiry); err != nil {
		return nil, err
	}
	if r.exemptionMatches, err = register(reg, r.exemptionMatches); err != nil {
		return nil, err
	}
	if r.webhookDrift, err = register(reg, r.webhookDrift); err != nil {
		return nil, err
	}
	if r.policyMode, err = register(reg, r.policyMode); err != nil {
		return nil, err
	}
	if r.endpointNodes, err = register(reg, r.endpointNodes); err != nil {
		return nil, err
	}
	if r.violations, err = register(reg, r.violations); err != nil {
		return nil, err
	}
	if r.nodeDeletingPods, err = register(reg, r.nodeDeletingPods); err != nil {
		return nil, err
	}
	if r.nodeDeletingPod, err = register(reg, r.nodeDeletingPod); err != nil {
		return nil, err
	}
	if r.nodeDeletingChanges, err = register(reg, r.nodeDeletingChanges); err != nil {
		return nil, err
	}
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
func (r *Recorder) Decision(id policy.ID, a policy.Action) {
	r.decisions.WithLabelValues(string(id), string(a)).Inc()
}

// Violations sets the number of objects of kind in namespace that violate
// policy; a series at zero is removed, so that only current violations
// are exported.
func (r *Recorder) Violations(id policy.ID, namespace, kind string, n int) {
	if n == 0 {
		r.violations.DeleteLabelValues(string(id), namespace, kind)
		return
	}
	r.violations.WithLabelValues(string(id), namespace, kind).Set(float64(n))
}

// EndpointNodes sets the number of nodes with each status, every status
// included, so that one no node has any more reads 0.
func (r *Recorder) EndpointNodes(counts map[hostnetwork.Status]int) {
	for _, s := range hostnetwork.Statuses {
		r.endpointNodes.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// PolicyModes sets endpoint_policy_policy_mode to the effective modes in
// force: one series per policy, at 1, for its mode.
func (r *Recorder) PolicyModes(modes map[policy.ID]policy.Mode) {
	for id, mode := range modes {
		for _, m := range []policy.Mode{policy.Enforce, policy.Audit, policy.Disabled} {
			if m != mode {
				r.policyMode.DeleteLabelValues(string(id), string(m))
			}
		}
		r.policyMode.WithLabelValues(string(id), string(mode)).Set(1)
	}
}

// Exemptions sets endpoint_policy_exemption_expiry_timestamp_seconds to the
// expiries of the exemptions in force: a series per exemption with an
// expiry and policy it covers, the others removed.
func (r *Recorder) Exemptions(exemptions []*policy.Exemption) {
	r.exemptionExpiry.Reset()
	for _, x := range exemptions {
		if x.Expires.IsZero() {
			continue
		}
		for _, id := range x.Policies {
			r.exemptionExpiry.WithLabelValues(x.Name, string(id)).Set(float64(x.Expires.UnixMilli()) / 1000)
		}
	}
}

// ExemptionMatches sets the matches of each exemption in matches, and
// removes the series of any other.
func (r *Recorder) ExemptionMatches(matches map[string]int) {
	r.exemptionMatches.Reset()
	for name, n := range matches {
		r.exemptionMatches.WithLabelValues(name).Set(float64(n))
	}
}

// WebhookConfigurationDrift sets whether field of webhook differs from what
// was installed.
func (r *Recorder) WebhookConfigurationDrift(webhook, field string, drifted bool) {
	v := 0.0
	if drifted {
		v = 1
	}
	r.webhookDrift.WithLabelValues(webhook, field).Set(v)
}

// ForgetWebhook removes the drift series of a webhook no longer installed.
func (r *Recorder) ForgetWebhook(webhook string) {
	r.webhookDrift.DeletePartialMatch(prometheus.Labels{"webhook": webhook})
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

// NodeDeletingPods sets the number of kube-proxy pods that carry the
// node-deleting annotation.
func (r *Recorder) NodeDeletingPods(n int) { r.nodeDeletingPods.Set(float64(n)) }

// NodeDeletingPod sets (on) or deletes the series of one annotated
// kube-proxy pod: endpoint_policy_kube_proxy_node_deleting, for alerts that
// must not page for a kube-proxy unready on a node being deleted.
func (r *Recorder) NodeDeletingPod(namespace, pod, node, reason string, on bool) {
	if on {
		r.nodeDeletingPod.WithLabelValues(namespace, pod, node, reason).Set(1)
		return
	}
	r.nodeDeletingPod.DeleteLabelValues(namespace, pod, node, reason)
}

// NodeDeletingAnnotation counts one change (or, in Audit, would-be change)
// to a kube-proxy pod's node-deleting annotations.
func (r *Recorder) NodeDeletingAnnotation(a AnnotationAction) {
	r.nodeDeletingChanges.WithLabelValues(string(a)).Inc()
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
