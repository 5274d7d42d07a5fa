package hostnetwork

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// envState is what a container says about one variable. Like the kubelet,
// the last entry of a name wins; all entries of that name are rewritten
// together so that no stale duplicate remains.
type envState struct {
	indexes   []int // every entry with this name, in order
	value     string
	valueFrom bool
	// envFrom names the container's envFrom sources that may set the
	// variable, when env does not (an env entry overrides envFrom).
	envFrom string
}

func (e envState) present() bool { return len(e.indexes) > 0 }

// fromEnvFrom reports whether only envFrom may set the variable.
func (e envState) fromEnvFrom() bool { return !e.present() && e.envFrom != "" }

func (e envState) String() string {
	switch {
	case e.fromEnvFrom():
		return "possibly set by envFrom " + e.envFrom
	case !e.present():
		// The kubelet injects the variable at run time; the spec has none.
		return "not set in the spec"
	case e.valueFrom:
		return "valueFrom"
	default:
		return strconv.Quote(e.value)
	}
}

// envFromSources describes c's envFrom sources that may produce name: a
// ConfigMap or Secret whose prefix is a prefix of name (Calico's manifest
// gives calico-node KUBERNETES_SERVICE_HOST and _PORT through
// `envFrom: configMapRef: kubernetes-services-endpoint`).
func envFromSources(c *corev1.Container, name string) string {
	var out []string
	for _, src := range c.EnvFrom {
		if !strings.HasPrefix(name, src.Prefix) {
			continue
		}
		switch {
		case src.ConfigMapRef != nil:
			out = append(out, fmt.Sprintf("configMapRef %q", src.ConfigMapRef.Name))
		case src.SecretRef != nil:
			out = append(out, fmt.Sprintf("secretRef %q", src.SecretRef.Name))
		}
	}
	return strings.Join(out, ", ")
}

// envOf reads what c says about KUBERNETES_SERVICE_HOST and _PORT.
func envOf(c *corev1.Container) (host, port envState) {
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
	host.envFrom, port.envFrom = envFromSources(c, EnvHost), envFromSources(c, EnvPort)
	return host, port
}

// container decides what to change in one container and returns the finding,
// with the minimal patch, when anything changes.
func (r *Rule) container(t target, c *corev1.Container, specPath *field.Path, list string, index int, kind string) (policy.Finding, bool) {
	host, port := envOf(c)
	setHost, hostIsOurs := r.decideHost(t, host)
	setPort := r.decidePort(t, port, setHost, hostIsOurs)
	if !setHost && !setPort {
		return policy.Finding{}, false
	}
	p := envPatch{env: c.Env, path: "/spec/" + list + "/" + strconv.Itoa(index) + "/env"}
	if setHost {
		p.set(EnvHost, t.host, host)
	}
	if setPort {
		p.set(EnvPort, t.port, port)
	}
	return policy.Finding{
		Field:       specPath.Child(list).Index(index).Child("env"),
		Rule:        RuleServiceHostEnv,
		Message:     fmt.Sprintf("set %s in %s %q", strings.Join(p.changes, ", "), kind, c.Name),
		Patch:       p.operations(),
		Annotations: map[string]string{EndpointAnnotation: t.endpoint},
	}, true
}

// decidePort returns whether KUBERNETES_SERVICE_PORT must be set. The port
// follows the host: a host we set gets our port, or the pair points
// nowhere. A host that already names ours gets our port where it has none
// (the kubelet would fill in the Service's 443); a port the user chose
// beside it is theirs unless Override is Always. A host we leave alone keeps
// its port.
func (r *Rule) decidePort(t target, port envState, setHost, hostIsOurs bool) bool {
	differs := !port.present() || port.valueFrom || port.value != t.port
	switch {
	case setHost:
		return differs
	case hostIsOurs:
		return (!port.present() && !port.fromEnvFrom()) || (r.settings.Override == OverrideAlways && differs)
	default:
		return false
	}
}

// envPatch is the minimal JSON patch of one container's env.
type envPatch struct {
	env     []corev1.EnvVar
	path    string // the env list's JSON pointer
	ops     []jsonpatch.Operation
	added   []map[string]string // new entries, in the API's JSON shape
	changes []string            // "NAME=value (was ...)", for the message
}

// set gives every entry of name the value, or adds one where s has none.
func (p *envPatch) set(name, value string, s envState) {
	p.changes = append(p.changes, fmt.Sprintf("%s=%s (was %s)", name, value, s))
	if !s.present() {
		p.added = append(p.added, map[string]string{"name": name, "value": value})
		return
	}
	for _, i := range s.indexes {
		if e := p.env[i]; e.ValueFrom == nil && e.Value == value {
			continue
		}
		p.ops = append(p.ops, jsonpatch.Operation{
			Operation: "replace",
			Path:      p.path + "/" + strconv.Itoa(i),
			Value:     map[string]string{"name": name, "value": value},
		})
	}
}

// operations returns the patch: the replacements, then the additions.
func (p *envPatch) operations() []jsonpatch.Operation {
	switch {
	case len(p.added) == 0:
		return p.ops
	case len(p.env) == 0:
		// No env list yet (or an empty one): create it in one operation.
		return append(p.ops, jsonpatch.Operation{Operation: "add", Path: p.path, Value: p.added})
	default:
		for _, e := range p.added {
			p.ops = append(p.ops, jsonpatch.Operation{Operation: "add", Path: p.path + "/-", Value: e})
		}
		return p.ops
	}
}

// decideHost returns whether KUBERNETES_SERVICE_HOST must be set, and whether
// it already names the configured host.
func (r *Rule) decideHost(t target, host envState) (set, ours bool) {
	switch {
	case host.fromEnvFrom():
		// Like valueFrom: set where the spec is read, not in it.
		return r.settings.Override == OverrideAlways, false
	case !host.present():
		return true, false
	case host.valueFrom:
		return r.settings.Override == OverrideAlways, false
	case host.value == t.host:
		return false, true
	case r.preserved(host.value):
		// An address the user trusts to reach every API server.
		return false, false
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
