package apiserver

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ProbeHostID is the apiserver-probe-host policy's stable identifier.
const ProbeHostID policy.ID = "apiserver-probe-host"

// ProbeHostRule reports kube-apiserver probes pinned to a node IP.
//
// kubeadm writes the kube-apiserver probes' httpGet.host from the node's
// advertise address. When the node's address changes (DHCP), the probes
// target an address that is gone, and the kubelet restarts an API server
// that is healthy. Loopback, DNS names and an empty host (the pod's IP) do
// not have this problem.
type ProbeHostRule struct{}

var _ policy.Rule = ProbeHostRule{}

// ID implements policy.Rule.
func (ProbeHostRule) ID() policy.ID { return ProbeHostID }

// Kind implements policy.Rule.
func (ProbeHostRule) Kind() policy.Kind { return policy.Validating }

// Evaluate implements policy.Rule. It applies to pods and workload pod
// templates that run a kube-apiserver container, and returns one finding per
// probe whose host is a non-loopback IP literal.
func (ProbeHostRule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok || policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	var findings []policy.Finding
	applies := false
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if !IsAPIServer(c) {
			continue
		}
		applies = true
		cPath := specPath.Child("containers").Index(i)
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
		}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
			if p.probe == nil {
				continue
			}
			if h := p.probe.HTTPGet; h != nil {
				findings = appendPinned(findings, c.Name, p.name, "httpGet", h.Host, cPath)
			}
			if s := p.probe.TCPSocket; s != nil {
				findings = appendPinned(findings, c.Name, p.name, "tcpSocket", s.Host, cPath)
			}
		}
	}
	return findings, applies
}

func appendPinned(findings []policy.Finding, container, probe, handler, host string, cPath *field.Path) []policy.Finding {
	ip, ok := parseIP(host)
	if !ok || ip.IsLoopback() {
		return findings
	}
	return append(findings, policy.Finding{
		Field: cPath.Child(probe, handler, "host"),
		Message: fmt.Sprintf("the %s of container %q targets the IP %s: when that address changes (a DHCP lease on the "+
			"node) the probe fails and the kubelet restarts a healthy API server. Set the probe's host to the node's FQDN "+
			"(kubeadm: a patch file per node, e.g. patches/kube-apiserver0+strategic.yaml setting the probes' host, "+
			"applied with --patches) or to 127.0.0.1",
			probe, container, ip),
	})
}
