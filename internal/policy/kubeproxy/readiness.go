package kubeproxy

import (
	"fmt"
	"strings"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ReadinessProbeID is the kube-proxy-readiness-probe policy's stable
// identifier.
const ReadinessProbeID policy.ID = "kube-proxy-readiness-probe"

// ReadinessProbeDescriptor describes the policy to the registry.
var ReadinessProbeDescriptor = policy.Descriptor{
	ID:     ReadinessProbeID,
	Effect: policy.Validating,
	// A /healthz readiness probe is a monitoring problem, not an outage:
	// report it, do not block the DaemonSet.
	DefaultMode: policy.Audit,
	Severity:    policy.SeverityLow,
	Category:    policy.CategoryNodeLifecycle,
	Summary: "kube-proxy containers whose readinessProbe is an `httpGet` on `/healthz` " +
		"(fails on purpose on nodes being deleted since v1.30; probe `/livez`)",
	Package: "internal/policy/kubeproxy",
	New:     func(policy.Settings) (policy.Rule, error) { return ReadinessProbeRule{}, nil },
}

// ReadinessProbeRule reports kube-proxy containers whose readiness probe is
// an httpGet on /healthz. Since v1.30 that endpoint fails on purpose on nodes
// being deleted, so the pod turns unready for an expected state and health
// tooling pages people (Gardener issue #11858, fixed by probing /livez).
// Liveness probes are not this rule's business.
type ReadinessProbeRule struct{}

var _ policy.Rule = ReadinessProbeRule{}

// ID implements policy.Rule.
func (ReadinessProbeRule) ID() policy.ID { return ReadinessProbeID }

// Effect implements policy.Rule.
func (ReadinessProbeRule) Effect() policy.Effect { return policy.Validating }

// Evaluate implements policy.Rule. It applies to pods and workload pod
// templates that run a kube-proxy container.
func (ReadinessProbeRule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok || policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	var findings []policy.Finding
	applies := false
	for _, i := range kubeProxyContainers(policy.PodLabelsOf(t.Object), spec, defaultSelectors) {
		c := &spec.Containers[i]
		applies = true
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || !isHealthz(c.ReadinessProbe.HTTPGet.Path) {
			continue
		}
		findings = append(findings, policy.Finding{
			Field: specPath.Child("containers").Index(i).Child("readinessProbe", "httpGet", "path"),
			Rule:  "readinessProbe",
			Message: fmt.Sprintf("the readinessProbe of container %q is an httpGet on %s: since Kubernetes v1.30 (KEP-3836) kube-proxy "+
				"fails /healthz on purpose on a node being deleted (taint %s or a deletionTimestamp), so the pod turns unready "+
				"for an expected state and health checks report a failure. Probe /livez instead (as Gardener did), which keeps "+
				"the old meaning", c.Name, c.ReadinessProbe.HTTPGet.Path, ToBeDeletedTaint),
		})
	}
	return findings, applies
}

// isHealthz reports whether an httpGet path is kube-proxy's /healthz, as the
// kubelet would request it: a missing leading slash, a trailing slash and a
// query string do not change the endpoint.
func isHealthz(p string) bool {
	p, _, _ = strings.Cut(p, "?")
	return strings.Trim(p, "/") == "healthz"
}
