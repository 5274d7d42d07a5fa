// Package hostnetwork implements the host-network-endpoint policy: containers
// of hostNetwork pods reach the API server through the node-local load
// balancer (for example k0s NLLB on localhost:7443) instead of one pinned
// control-plane address.
//
// A hostNetwork pod's in-cluster client reads only KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT. When they are pinned to one control-plane IP (as
// Cilium's k8sServiceHost does), the component loses the API as soon as that
// one node fails, although the others are healthy (k0s issue #5740).
package hostnetwork

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ID is the policy's stable identifier.
const ID policy.ID = "host-network-endpoint"

const (
	// EnvHost and EnvPort are the two variables client-go's in-cluster
	// configuration reads.
	EnvHost = "KUBERNETES_SERVICE_HOST"
	EnvPort = "KUBERNETES_SERVICE_PORT"

	// EndpointAnnotation records, on a pod this policy changed, the endpoint
	// ("<host>:<port>") its containers were pointed at.
	EndpointAnnotation = "endpoint-policy.io/endpoint"
)

// Override says which existing KUBERNETES_SERVICE_HOST values are rewritten.
type Override string

const (
	// OverrideIPLiterals rewrites a host that is a non-loopback IP literal:
	// an address pinned to one control-plane node. DNS names, loopback and
	// valueFrom are left alone. The default.
	OverrideIPLiterals Override = "IPLiterals"
	// OverrideAlways rewrites every value, DNS names and valueFrom included.
	OverrideAlways Override = "Always"
	// OverrideNever only adds the variables where the host is absent.
	OverrideNever Override = "Never"
)

// Descriptor describes the policy to the registry.
var Descriptor = policy.Descriptor{
	ID:          ID,
	Effect:      policy.Mutating,
	DefaultMode: policy.Enforce,
	Summary: "hostNetwork pods get `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` pointing at the node-local API load balancer " +
		"(`localhost:7443`) instead of a pinned control-plane IP",
	Package:         "internal/policy/hostnetwork",
	DefaultSettings: policy.DefaultsOf(DefaultSettings),
	New:             policy.NewWith(ID, New),
}

// Settings configure the rule: policies.host-network-endpoint in the
// configuration file.
type Settings struct {
	// Host and Port are the node-local API load balancer.
	Host string `json:"host"`
	Port int32  `json:"port"`
	// Override selects which existing values are rewritten.
	Override Override `json:"override"`
}

// DefaultSettings point at k0s' node-local load balancer.
func DefaultSettings() Settings {
	return Settings{Host: "localhost", Port: 7443, Override: OverrideIPLiterals}
}

// Validate returns the problems with s, with field paths under fldPath.
func (s Settings) Validate(fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case s.Host == "":
		errs = append(errs, field.Required(fldPath.Child("host"), "the node-local API load balancer's host name or IP"))
	case isIP(s.Host):
	default:
		for _, msg := range validation.IsDNS1123Subdomain(s.Host) {
			errs = append(errs, field.Invalid(fldPath.Child("host"), s.Host, "must be an IP address or a DNS name: "+msg))
		}
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, field.Invalid(fldPath.Child("port"), s.Port, "must be between 1 and 65535, inclusive"))
	}
	switch s.Override {
	case OverrideIPLiterals, OverrideAlways, OverrideNever:
	default:
		errs = append(errs, field.NotSupported(fldPath.Child("override"), s.Override,
			[]Override{OverrideIPLiterals, OverrideAlways, OverrideNever}))
	}
	return errs
}

// Rule is the host-network-endpoint rule.
type Rule struct {
	settings Settings
	port     string // settings.Port, formatted once
	endpoint string // "<host>:<port>" for EndpointAnnotation
}

var _ policy.Rule = (*Rule)(nil)

// New returns the rule for s, or an error when s is not valid.
func New(s Settings) (*Rule, error) {
	if errs := s.Validate(field.NewPath(string(ID))); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	port := strconv.Itoa(int(s.Port))
	return &Rule{settings: s, port: port, endpoint: net.JoinHostPort(s.Host, port)}, nil
}

// ID implements policy.Rule.
func (r *Rule) ID() policy.ID { return ID }

// Effect implements policy.Rule: the rule mutates.
func (r *Rule) Effect() policy.Effect { return policy.Mutating }

// Evaluate implements policy.Rule. It applies to hostNetwork pods that are
// neither excluded nor mirror pods, and returns one finding per container
// whose endpoint it would change.
func (r *Rule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	pod, ok := t.Object.(*corev1.Pod)
	if !ok || !pod.Spec.HostNetwork || policy.Excluded(pod, t.NamespaceLabels) || policy.IsMirrorPod(pod) {
		return nil, false
	}
	var findings []policy.Finding
	for i := range pod.Spec.InitContainers {
		if f, ok := r.container(&pod.Spec.InitContainers[i], "initContainers", i, "init container"); ok {
			findings = append(findings, f)
		}
	}
	for i := range pod.Spec.Containers {
		if f, ok := r.container(&pod.Spec.Containers[i], "containers", i, "container"); ok {
			findings = append(findings, f)
		}
	}
	return findings, true
}

// envState is what a container says about one variable. Like the kubelet,
// the last entry of a name wins; all entries of that name are rewritten
// together so that no stale duplicate remains.
type envState struct {
	indexes   []int // every entry with this name, in order
	value     string
	valueFrom bool
}

func (e envState) present() bool { return len(e.indexes) > 0 }

func (e envState) String() string {
	switch {
	case !e.present():
		return "unset"
	case e.valueFrom:
		return "valueFrom"
	default:
		return strconv.Quote(e.value)
	}
}

// container decides what to change in one container and returns the finding,
// with the minimal patch, when anything changes.
func (r *Rule) container(c *corev1.Container, list string, index int, kind string) (policy.Finding, bool) {
	var host, port envState
	for i := range c.Env {
		var s *envState
		switch c.Env[i].Name {
		case EnvHost:
			s = &host
		case EnvPort:
			s = &port
		default:
			continue
		}
		s.indexes = append(s.indexes, i)
		s.value, s.valueFrom = c.Env[i].Value, c.Env[i].ValueFrom != nil
	}

	setHost, hostIsOurs := r.decideHost(host)
	// The port follows the host: a host we set gets our port, or the pair
	// points nowhere. A host that already names ours gets our port where it
	// has none (the kubelet would fill in the Service's 443); a port the user
	// chose beside it is theirs unless Override is Always. A host we leave
	// alone keeps its port.
	portDiffers := !port.present() || port.valueFrom || port.value != r.port
	var setPort bool
	switch {
	case setHost:
		setPort = portDiffers
	case hostIsOurs:
		setPort = !port.present() || (r.settings.Override == OverrideAlways && portDiffers)
	}
	if !setHost && !setPort {
		return policy.Finding{}, false
	}

	envPath := "/spec/" + list + "/" + strconv.Itoa(index) + "/env"
	var ops []jsonpatch.Operation
	var added []map[string]string // new entries, in the API's JSON shape
	var changes []string
	apply := func(name, value string, s envState) {
		changes = append(changes, fmt.Sprintf("%s=%s (was %s)", name, value, s))
		if !s.present() {
			added = append(added, map[string]string{"name": name, "value": value})
			return
		}
		for _, i := range s.indexes {
			if e := c.Env[i]; e.ValueFrom == nil && e.Value == value {
				continue
			}
			ops = append(ops, jsonpatch.Operation{
				Operation: "replace",
				Path:      envPath + "/" + strconv.Itoa(i),
				Value:     map[string]string{"name": name, "value": value},
			})
		}
	}
	if setHost {
		apply(EnvHost, r.settings.Host, host)
	}
	if setPort {
		apply(EnvPort, r.port, port)
	}
	switch {
	case len(added) == 0:
	case len(c.Env) == 0:
		// No env list yet (or an empty one): create it in one operation.
		ops = append(ops, jsonpatch.Operation{Operation: "add", Path: envPath, Value: added})
	default:
		for _, e := range added {
			ops = append(ops, jsonpatch.Operation{Operation: "add", Path: envPath + "/-", Value: e})
		}
	}

	return policy.Finding{
		Field:       field.NewPath("spec", list).Index(index).Child("env"),
		Message:     fmt.Sprintf("set %s in %s %q", strings.Join(changes, ", "), kind, c.Name),
		Patch:       ops,
		Annotations: map[string]string{EndpointAnnotation: r.endpoint},
	}, true
}

// decideHost returns whether KUBERNETES_SERVICE_HOST must be set, and whether
// it already names the configured host.
func (r *Rule) decideHost(host envState) (set, ours bool) {
	switch {
	case !host.present():
		return true, false
	case host.valueFrom:
		return r.settings.Override == OverrideAlways, false
	case host.value == r.settings.Host:
		return false, true
	case host.value == "":
		// An empty host breaks in-cluster configuration outright; setting it
		// is adding it.
		return true, false
	case isPinnedIP(host.value):
		return r.settings.Override != OverrideNever, false
	default:
		// A DNS name or a loopback address: already a deliberate choice.
		return r.settings.Override == OverrideAlways, false
	}
}

// parseIP parses an IP literal, IPv6 with or without brackets.
func parseIP(s string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	return addr, err == nil
}

func isIP(s string) bool {
	_, ok := parseIP(s)
	return ok
}

// isPinnedIP reports whether s is an IP literal that names one machine other
// than this one: any IPv4 or IPv6 address except loopback.
func isPinnedIP(s string) bool {
	addr, ok := parseIP(s)
	return ok && !addr.IsLoopback()
}
