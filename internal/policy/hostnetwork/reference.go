package hostnetwork

// Endpoints by reference: a container's KUBERNETES_SERVICE_HOST that comes
// from a ConfigMap (Cilium's k8sServiceHostRef renders valueFrom
// configMapKeyRef, Calico's manifest envFrom configMapRef
// kubernetes-services-endpoint) is judged by the value the ConfigMap holds.
// The fix is in the ConfigMap, not the pod: these findings are Advisory,
// never a patch (except under override: Always, which writes explicit env).

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// refState is what a front-end could tell of a reference.
type refState int

const (
	// refNone: the host is not by reference (a value, absent, a fieldRef).
	refNone refState = iota
	// refResolved: the value is known.
	refResolved
	// refSecret: it comes (or may come) from a Secret, never read.
	refSecret
	// refNotListed: from a ConfigMap endpointConfigMaps does not list.
	refNotListed
	// refUnknown: not known (a ConfigMap not loaded, absent, or without
	// the key): no verdict, as for a pod the cache cannot place.
	refUnknown
)

// reference is where a container's KUBERNETES_SERVICE_HOST comes from.
type reference struct {
	state     refState
	source    string // `ConfigMap kube-system/api-endpoint key "host"`
	namespace string // the ConfigMap's, for refNotListed
	name      string
	value     string
	field     *field.Path
}

// hostReference resolves c's KUBERNETES_SERVICE_HOST as the kubelet does:
// the last env entry of the name wins; without one, the last envFrom source
// (its prefix stripped) that has the key. The container is list[index] of
// the spec at specPath.
func hostReference(c *corev1.Container, namespace string, cl policy.Cluster, specPath *field.Path, list string, index int) reference {
	if len(c.EnvFrom) == 0 && !hasValueFrom(c.Env) {
		return reference{} // most containers: no allocation
	}
	at := specPath.Child(list).Index(index)
	if r, ok := envReference(c.Env, namespace, cl, at); ok {
		return r
	}
	return envFromReference(c.EnvFrom, namespace, cl, at)
}

// envReference resolves the last env entry of KUBERNETES_SERVICE_HOST; ok
// is false when env has none (envFrom may set it).
func envReference(env []corev1.EnvVar, namespace string, cl policy.Cluster, at *field.Path) (reference, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		e := env[i]
		if e.Name != EnvHost {
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf == nil:
			return reference{}, true
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			r := lookupKey(cl, namespace, ref.Name, ref.Key, at.Child("env").Index(i).Child("valueFrom", "configMapKeyRef"))
			if r.state == refNone {
				r.state = refUnknown // no such key: the pod does not start, or (optional) has no host
			}
			return r, true
		case vf.SecretKeyRef != nil:
			return reference{state: refSecret, field: at.Child("env").Index(i).Child("valueFrom", "secretKeyRef"),
				source: fmt.Sprintf("Secret %s/%s key %q", namespace, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)}, true
		}
		return reference{}, true
	}
	return reference{}, false
}

// envFromReference resolves KUBERNETES_SERVICE_HOST from the last envFrom
// source (its prefix stripped) that has it.
func envFromReference(sources []corev1.EnvFromSource, namespace string, cl policy.Cluster, at *field.Path) reference {
	for i := len(sources) - 1; i >= 0; i-- {
		src := sources[i]
		key, ok := strings.CutPrefix(EnvHost, src.Prefix)
		if !ok {
			continue
		}
		at := at.Child("envFrom").Index(i)
		var r reference
		switch {
		case src.ConfigMapRef != nil:
			r = lookupKey(cl, namespace, src.ConfigMapRef.Name, key, at)
		case src.SecretRef != nil:
			r = reference{state: refSecret, field: at,
				source: fmt.Sprintf("Secret %s/%s (envFrom%s)", namespace, src.SecretRef.Name, prefixNote(src.Prefix))}
		}
		if src.Prefix == "" && (r.state == refSecret || r.state == refNotListed) {
			// An unprefixed envFrom of a Secret or of a ConfigMap the server
			// may not read: whether it sets the variable is unknown, and
			// most carry an application's settings, not the API endpoint.
			// No verdict rather than a warning on every such pod; a prefix
			// aimed at the variable (KUBERNETES_), or a configMapKeyRef, is
			// reported.
			return reference{state: refUnknown}
		}
		if r.state != refNone {
			return r
		}
	}
	return reference{}
}

// hasValueFrom reports whether env sets KUBERNETES_SERVICE_HOST with
// valueFrom.
func hasValueFrom(env []corev1.EnvVar) bool {
	for i := range env {
		if env[i].Name == EnvHost && env[i].ValueFrom != nil {
			return true
		}
	}
	return false
}

func prefixNote(prefix string) string {
	if prefix == "" {
		return ""
	}
	return fmt.Sprintf(", prefix %q", prefix)
}

// lookupKey reads key of the ConfigMap namespace/name: refNone when the
// ConfigMap is known and has no such key, or is known to be absent (an
// earlier envFrom source may set it).
func lookupKey(cl policy.Cluster, namespace, name, key string, at *field.Path) reference {
	r := reference{field: at, namespace: namespace, name: name,
		source: fmt.Sprintf("ConfigMap %s/%s key %q", namespace, name, key)}
	cm, knowledge := policy.LookupConfigMap(cl, namespace, name)
	switch knowledge {
	case policy.Known:
		v, ok := cm.Data[key]
		if !ok {
			return reference{}
		}
		r.state, r.value = refResolved, v
	case policy.Absent:
		return reference{}
	case policy.NotListed:
		r.state = refNotListed
	default:
		r.state = refUnknown
	}
	return r
}

// refTarget is what reference findings recommend: the configured endpoint,
// or under host: auto the one the agents verified on every node ("" when
// none is), and where it is verified.
type refTarget struct {
	endpoint string
	// note ends the fix: ": verified on all 5 nodes its pods can run on",
	// or when it is not, or not known, what to wait for.
	note string
}

// referenceFindings returns one Advisory finding per container of spec
// whose KUBERNETES_SERVICE_HOST comes by reference and is not the node-local
// endpoint: none under override: Always, which rewrites them as values.
// pod is the pod whose spec it is, nil for a template (the target is then
// computed for a pod of the template, at most once, when a finding needs
// it). No closure: the pod mutator's path allocates nothing more.
func (r *Rule) referenceFindings(spec *corev1.PodSpec, specPath *field.Path, namespace string, cl policy.Cluster, pod *corev1.Pod) []policy.Finding {
	if r.settings.Override == OverrideAlways {
		return nil
	}
	var out []policy.Finding
	var tgt *refTarget
	for _, l := range containerLists(spec) {
		for i := range l.containers {
			c := &l.containers[i]
			ref := hostReference(c, namespace, cl, specPath, l.list, i)
			if ref.state == refNone || ref.state == refUnknown || (ref.state == refResolved && r.nodeLocal(ref.value)) {
				continue
			}
			if tgt == nil {
				if pod == nil {
					pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace}, Spec: *spec}
				}
				t := r.podTarget(pod, cl)
				tgt = &t
			}
			msg, detail := r.referenceMessage(ref, *tgt)
			out = append(out, policy.Finding{Field: ref.field, Rule: RuleServiceHostReference, Advisory: true,
				Message: fmt.Sprintf("%s of %s %q comes from %s", EnvHost, l.kind, c.Name, msg) + ": " + detail, Detail: detail})
		}
	}
	return out
}

// nodeLocal reports whether host needs no change: the configured host, a
// host of preserve, or under host: auto a loopback address or localhost.
func (r *Rule) nodeLocal(host string) bool {
	if r.settings.Auto() {
		return !isPinnedIP(host) && (isIP(host) || strings.EqualFold(host, "localhost"))
	}
	return host == r.fixed.host || r.preserved(host)
}

// referenceMessage returns where the value comes from ("ConfigMap ... =
// 10.0.0.11") and the fix.
func (r *Rule) referenceMessage(ref reference, t refTarget) (string, string) {
	switch ref.state {
	case refSecret:
		return ref.source, "Secrets are never read, so it was not judged; keep the API endpoint in a ConfigMap listed in " +
			policy.EndpointConfigMapsSetting + ", or as a value"
	case refNotListed:
		return ref.source, fmt.Sprintf("the server may not read that ConfigMap, so it was not judged: add %q to %s (the chart's values too, "+
			"which grant the read)", ref.namespace+"/"+ref.name, policy.EndpointConfigMapsSetting)
	}
	from := ref.source + " = " + ref.value
	if t.endpoint == "" {
		return from, "not the node-local endpoint: set it there to the endpoint the node agent verifies on every node (host: auto)" + t.note
	}
	return from, "not the node-local endpoint: set it to " + t.endpoint + " there" + t.note
}

// podTarget returns the target for pod's reference findings: the endpoint
// and where the agents verified it, when the front-end has their reports.
func (r *Rule) podTarget(pod *corev1.Pod, cl policy.Cluster) refTarget {
	v, online := cl.(Verifications)
	if !online {
		if r.settings.Auto() {
			return refTarget{}
		}
		return refTarget{endpoint: r.fixed.endpoint, note: ", where the node agent verifies it on every node its pods run on"}
	}
	endpoint, warning := verify(pod, v, r.fixed.endpoint)
	if warning != "" {
		return refTarget{endpoint: r.fixed.endpoint, note: ", once the node agent verifies it on every node its pods run on (" +
			strings.TrimPrefix(warning, "not rewritten: ") + ")"}
	}
	n := countNodes(pod, v)
	return refTarget{endpoint: endpoint, note: ": verified on all " + strconv.Itoa(n) + " " + plural(n, "node", "nodes") + " its pods can run on"}
}

// countNodes counts the nodes pod can run on: the nodes it names, or the
// known nodes it fits.
func countNodes(pod *corev1.Pod, v Verifications) int {
	if names, ok := namedNodes(pod); ok {
		return len(names)
	}
	fits, n := fitsNode(pod), 0
	for nr := range v.Nodes() {
		if fits(nr.Node) {
			n++
		}
	}
	return n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
