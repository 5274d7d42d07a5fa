// Package hostnetwork implements the host-network-endpoint policy: containers
// of hostNetwork pods reach the API server through the node-local load
// balancer (for example k0s NLLB on localhost:7443) instead of one pinned
// control-plane address.
//
// A hostNetwork pod's in-cluster client reads only KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT. When they are pinned to one control-plane IP (as
// Cilium's k8sServiceHost does), the component loses the API as soon as that
// one node fails, although the others are healthy (k0s issue #5740).
//
// A rewrite to an endpoint that does not answer, or whose certificate does
// not name the host, would turn that into a cluster-wide outage. With
// verification Required the rule rewrites a pod only to an endpoint that the
// node agent (internal/agent, one Lease per node: lease.go) verified on
// every node the pod can run on (verify.go).
package hostnetwork

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// podSpecPath is a pod's spec, the root of its findings' fields.
var podSpecPath = field.NewPath("spec")

// Rule is the host-network-endpoint rule.
type Rule struct {
	settings Settings
	fixed    target // the configured endpoint; zero under host: auto
	// preserved are Settings.Preserve parsed: names (lower case) and
	// addresses, and CIDRs.
	preservedHosts    map[string]bool
	preservedPrefixes []netip.Prefix
}

// preserved reports whether host is one of Settings.Preserve.
func (r *Rule) preserved(host string) bool {
	if addr, ok := parseIP(host); ok {
		if r.preservedHosts[addr.Unmap().String()] {
			return true
		}
		for _, p := range r.preservedPrefixes {
			if p.Contains(addr.Unmap()) {
				return true
			}
		}
		return false
	}
	return r.preservedHosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// target is an endpoint to point containers at.
type target struct {
	host, port string
	endpoint   string // "<host>:<port>" for EndpointAnnotation
}

func targetOf(endpoint string) (target, error) {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return target{}, err
	}
	return target{host: host, port: port, endpoint: endpoint}, nil
}

var _ policy.Rule = (*Rule)(nil)

// New returns the rule for s, or an error when s is not valid.
func New(s Settings) (*Rule, error) {
	if errs := s.Validate(field.NewPath(string(ID))); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	r := &Rule{settings: s, preservedHosts: map[string]bool{}}
	for _, v := range s.Preserve {
		if p, err := netip.ParsePrefix(v); err == nil {
			r.preservedPrefixes = append(r.preservedPrefixes, p.Masked())
		} else if addr, ok := parseIP(v); ok {
			r.preservedHosts[addr.Unmap().String()] = true
		} else {
			r.preservedHosts[strings.ToLower(strings.TrimSuffix(v, "."))] = true
		}
	}
	if !s.Auto() {
		r.fixed = target{host: s.Host, port: strconv.Itoa(int(s.Port)), endpoint: s.Endpoint()}
	}
	return r, nil
}

// ID implements policy.Rule.
func (r *Rule) ID() policy.ID { return ID }

// Effect implements policy.Rule: the rule mutates.
func (r *Rule) Effect() policy.Effect { return policy.Mutating }

// Evaluate implements policy.Rule. It applies to hostNetwork pods that are
// neither excluded nor mirror pods, and returns one finding per container
// whose endpoint it would change. With verification Required, the change is
// made only to an endpoint the node agents verified on every node the pod
// can run on; otherwise the one finding is Unverified and says why. A
// front-end without the agents' reports (check) gets the change, with a
// message that admission applies it only where verified.
func (r *Rule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	pod, ok := t.Object.(*corev1.Pod)
	if !ok {
		return r.template(t)
	}
	if !pod.Spec.HostNetwork || policy.Excluded(pod, t.NamespaceLabels) || policy.IsMirrorPod(pod) {
		return nil, false
	}
	refs := r.referenceFindings(&pod.Spec, podSpecPath, pod.Namespace, t.Cluster, pod)
	return append(r.rewrites(pod, t), refs...), true
}

// rewrites returns the changes to pod's containers, or the one Unverified
// finding that holds them back.
func (r *Rule) rewrites(pod *corev1.Pod, t policy.Target) []policy.Finding {
	if r.settings.Verification == VerificationOff {
		return r.findings(pod, r.fixed)
	}
	// Under host: auto the endpoint is not known until the nodes are: first
	// see whether any container would change at all.
	probe := r.fixed
	if r.settings.Auto() {
		probe = target{host: HostAuto, port: "0", endpoint: HostAuto}
	}
	findings := r.findings(pod, probe)
	if len(findings) == 0 {
		return nil
	}
	v, online := t.Cluster.(Verifications)
	if !online {
		return r.offline(findings)
	}
	endpoint, warning := verify(pod, v, r.fixed.endpoint)
	if warning != "" {
		return []policy.Finding{{Rule: RuleUnverified, Message: warning, Unverified: true}}
	}
	if endpoint == r.fixed.endpoint {
		return findings
	}
	tgt, err := targetOf(endpoint)
	if err != nil {
		return []policy.Finding{{Rule: RuleUnverified, Message: fmt.Sprintf("not rewritten: the verified endpoint %q is not host:port", endpoint), Unverified: true}}
	}
	return r.findings(pod, tgt)
}

// template reports, on a workload whose pod template is hostNetwork, what
// the pods it creates will get at admission: Template findings, never a
// patch of the workload. A Helm-rendered Cilium install with its operator
// pinned to a control-plane IP (k0s #5740) is seen before it ships.
func (r *Rule) template(t policy.Target) ([]policy.Finding, bool) {
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok || !spec.HostNetwork || policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	probe := r.fixed
	if r.settings.Auto() {
		probe = target{host: HostAuto, port: "0", endpoint: HostAuto}
	}
	// A template whose pods read the endpoint from a ConfigMap: judged by
	// the ConfigMap's value, as their pods are.
	refs := r.referenceFindings(spec, specPath, t.Object.GetNamespace(), t.Cluster, nil)
	return append(r.templateRewrites(spec, specPath, probe), refs...), true
}

// templateRewrites returns the Template findings of the rewrites a
// workload's pods will get.
func (r *Rule) templateRewrites(spec *corev1.PodSpec, specPath *field.Path, probe target) []policy.Finding {
	// Only a template that pins an address (the k0s #5740 shape) is worth a
	// finding. One that leaves the variables unset is the product working:
	// admission sets them on each pod, and there is nothing to fix.
	findings := r.specFindings(spec, specPath, probe, pinsAddress)
	if len(findings) == 0 {
		return nil
	}
	if r.settings.Auto() {
		// Which endpoint is not known before the nodes are: unverified, as
		// a pod is offline.
		return []policy.Finding{{Field: specPath, Rule: RulePodTemplate, Template: true, Unverified: true,
			Message: "pods created from this template will be rewritten: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT pointed at the " +
				"endpoint the node agent verified on their node (host: auto)"}}
	}
	where := ""
	if r.settings.Verification == VerificationRequired {
		where = ", where the node agent verified " + r.fixed.endpoint + " on their node"
	}
	out := make([]policy.Finding, len(findings))
	for i, f := range findings {
		out[i] = policy.Finding{Field: f.Field, Rule: RulePodTemplate, Template: true,
			Message: "pods created from this template will be rewritten" + where + ": " + f.Message}
	}
	return out
}

// pinsAddress reports whether c pins KUBERNETES_SERVICE_HOST to an
// address: an IP literal, not loopback.
func pinsAddress(c *corev1.Container) bool {
	host, _ := envOf(c)
	return host.present() && !host.valueFrom && isPinnedIP(host.value)
}

// offline words findings for a front-end that has no agent reports.
func (r *Rule) offline(findings []policy.Finding) []policy.Finding {
	if r.settings.Auto() {
		return []policy.Finding{{
			Rule: RuleUnverified,
			Message: "point KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT at the endpoint the node agent verified on the pod's node " +
				"(host: auto): admission rewrites the pod only where one endpoint is verified on every node it can run on",
			Unverified: true,
		}}
	}
	for i := range findings {
		findings[i].Message += "; admission applies it only where the node agent verified " + r.fixed.endpoint + " on the pod's node"
	}
	return findings
}

// findings returns one finding per container that must change to point at
// t.
func (r *Rule) findings(pod *corev1.Pod, t target) []policy.Finding {
	return r.specFindings(&pod.Spec, field.NewPath("spec"), t, nil)
}

// containerList is one of a pod spec's container lists, with its field
// name and how messages name its containers.
type containerList struct {
	containers []corev1.Container
	list, kind string
}

// containerLists are spec's container lists, init containers first.
func containerLists(spec *corev1.PodSpec) [2]containerList {
	return [2]containerList{{spec.InitContainers, "initContainers", "init container"}, {spec.Containers, "containers", "container"}}
}

// specFindings returns one finding per container of spec, at specPath,
// that must change to point at t; only the containers only accepts, when
// not nil.
func (r *Rule) specFindings(spec *corev1.PodSpec, specPath *field.Path, t target, only func(*corev1.Container) bool) []policy.Finding {
	var findings []policy.Finding
	for _, l := range containerLists(spec) {
		for i := range l.containers {
			c := &l.containers[i]
			if only != nil && !only(c) {
				continue
			}
			if f, ok := r.container(t, c, specPath, l.list, i, l.kind); ok {
				findings = append(findings, f)
			}
		}
	}
	return findings
}
