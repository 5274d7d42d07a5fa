package apiserver

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ProbeHostID is the apiserver-probe-host policy's stable identifier.
const ProbeHostID policy.ID = "apiserver-probe-host"

// ProbeHostDescriptor describes the policy to the registry.
var ProbeHostDescriptor = policy.Descriptor{
	ID:     ProbeHostID,
	Effect: policy.Validating,
	// kubeadm itself pins the probes to the node IP, which is fine with
	// static addresses: users on DHCP switch this to Enforce.
	DefaultMode: policy.Audit,
	Severity:    policy.SeverityMedium,
	Category:    policy.CategoryControlPlane,
	Summary: "kube-apiserver liveness/readiness/startup probes whose `httpGet.host`/`tcpSocket.host` is a non-loopback IP literal " +
		"(breaks when the node's DHCP address changes)",
	Package: "internal/policy/apiserver",
	New:     func(policy.Settings) (policy.Rule, error) { return ProbeHostRule{}, nil },
}

// probeHostFix is why a pinned probe matters and how to fix it: the same for
// every probe, said once for all of an object's (policy.Result.Summary).
const probeHostFix = "when that address changes (a DHCP lease on the node) the probe fails and the kubelet restarts a healthy API server. " +
	"Set the probe's host to the node's FQDN (kubeadm: a patch file per node, e.g. patches/kube-apiserver0+strategic.yaml setting " +
	"the probes' host, applied with --patches) or to 127.0.0.1"

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

// Effect implements policy.Rule.
func (ProbeHostRule) Effect() policy.Effect { return policy.Validating }

// Evaluate implements policy.Rule. It applies to pods and workload pod
// templates that run a kube-apiserver container, and returns one finding per
// probe whose host is a non-loopback IP literal.
func (ProbeHostRule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok || policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	pinned, applies := pinnedProbes(spec)
	findings := make([]policy.Finding, 0, len(pinned))
	for _, p := range pinned {
		findings = append(findings, policy.Finding{
			Rule:    p.probe,
			Field:   specPath.Child("containers").Index(p.container).Child(p.probe, p.handler, "host"),
			Message: fmt.Sprintf("the %s of container %q targets the IP %s: %s", p.probe, spec.Containers[p.container].Name, p.ip, probeHostFix),
			Detail:  probeHostFix,
		})
	}
	return findings, applies
}

// pinnedProbe is one kube-apiserver probe whose host is a non-loopback IP.
type pinnedProbe struct {
	container int    // index in spec.containers
	probe     string // livenessProbe, readinessProbe, startupProbe
	handler   string // httpGet, tcpSocket
	ip        netip.Addr
}

// pinnedProbes returns the pinned probes of spec's kube-apiserver containers;
// hasAPIServer is false when spec runs no kube-apiserver.
func pinnedProbes(spec *corev1.PodSpec) (pinned []pinnedProbe, hasAPIServer bool) {
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if !IsAPIServer(c) {
			continue
		}
		hasAPIServer = true
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
		}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
			if p.probe == nil {
				continue
			}
			if h := p.probe.HTTPGet; h != nil {
				if ip, ok := parseIP(h.Host); ok && !ip.IsLoopback() {
					pinned = append(pinned, pinnedProbe{container: i, probe: p.name, handler: "httpGet", ip: ip})
				}
			}
			if s := p.probe.TCPSocket; s != nil {
				if ip, ok := parseIP(s.Host); ok && !ip.IsLoopback() {
					pinned = append(pinned, pinnedProbe{container: i, probe: p.name, handler: "tcpSocket", ip: ip})
				}
			}
		}
	}
	return pinned, hasAPIServer
}

// KubeadmPatchFile is the name kubeadm gives the strategic merge patch of
// the kube-apiserver static pod manifest in a --patches directory.
const KubeadmPatchFile = "kube-apiserver0+strategic.yaml"

// ProbeHostPatch returns a kubeadm patch (strategic merge, for
// KubeadmPatchFile) that points every pinned probe of pod's kube-apiserver
// containers at host, the node's FQDN, and changes nothing else. ok is false
// when no probe is pinned.
func ProbeHostPatch(pod *corev1.Pod, host string) (patch []byte, ok bool, err error) {
	pinned, _ := pinnedProbes(&pod.Spec)
	if len(pinned) == 0 {
		return nil, false, nil
	}
	// Containers are merged by name; one entry per container, in order.
	var containers []map[string]any
	byIndex := map[int]map[string]any{}
	for _, p := range pinned {
		c, seen := byIndex[p.container]
		if !seen {
			c = map[string]any{"name": pod.Spec.Containers[p.container].Name}
			byIndex[p.container] = c
			containers = append(containers, c)
		}
		probe, _ := c[p.probe].(map[string]any)
		if probe == nil {
			probe = map[string]any{}
			c[p.probe] = probe
		}
		probe[p.handler] = map[string]any{"host": host}
	}
	patch, err = yaml.Marshal(map[string]any{"spec": map[string]any{"containers": containers}})
	if err != nil {
		return nil, false, fmt.Errorf("encoding the kubeadm patch: %w", err)
	}
	return patch, true, nil
}
