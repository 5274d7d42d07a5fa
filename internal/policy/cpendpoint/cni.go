package cpendpoint

// Where today's CNIs keep the API endpoint: Cilium's cilium-config keys and
// agent flags, Calico's kubernetes-services-endpoint ConfigMap, and any
// ConfigMap of endpointConfigMaps (Cilium's k8sServiceHostRef names one).

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

const (
	// CiliumConfigName is Cilium's ConfigMap (the chart's
	// cilium-configmap.yaml). Its k8s-api-server-urls (chart value
	// k8s.apiServerURLs, Cilium 1.18+) holds the API server URLs, space
	// or comma separated, among which the agent fails over;
	// k8s-api-server is the older single one (deprecated in 1.18).
	CiliumConfigName       = "cilium-config"
	CiliumAPIServerKey     = "k8s-api-server"
	CiliumAPIServerURLsKey = "k8s-api-server-urls"
	// ServicesEndpointName is Calico's ConfigMap of the API endpoint for
	// its hostNetwork components (calico-node, typha, the operator), read
	// through envFrom: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
	ServicesEndpointName = "kubernetes-services-endpoint"
	ServicesEndpointKey  = "KUBERNETES_SERVICE_HOST"
)

// The checks of the CNIs' carriers (report results' rule).
const (
	RuleCiliumConfig      = "cilium-config-api-server"
	RuleCiliumFlag        = "cilium-api-server-flag"
	RuleServicesEndpoint  = "kubernetes-services-endpoint"
	RuleEndpointConfigMap = "endpoint-configmap"
)

const ciliumEffect = "every Cilium agent and operator reaches the API server through that one node, so when it is down no node's " +
	"networking is updated and new pods get none"

// configMapEndpoints returns the API endpoints a ConfigMap carries:
// cilium-config's two keys, kubernetes-services-endpoint's host, and every
// single-address value of another ConfigMap endpointConfigMaps lists.
func configMapEndpoints(o *corev1.ConfigMap, cl policy.Cluster) ([]endpoint, bool) {
	ref := o.Namespace + "/" + o.Name
	switch o.Name {
	case CiliumConfigName:
		var out []endpoint
		if v := strings.TrimSpace(o.Data[CiliumAPIServerKey]); v != "" {
			out = append(out, endpoint{field: field.NewPath("data").Key(CiliumAPIServerKey), rule: RuleCiliumConfig, server: v, host: hostOf(v),
				what: fmt.Sprintf("%s in ConfigMap %s", CiliumAPIServerKey, ref), effect: ciliumEffect})
		}
		if e, ok := urlList(o.Data[CiliumAPIServerURLsKey]); ok {
			e.field, e.rule = field.NewPath("data").Key(CiliumAPIServerURLsKey), RuleCiliumConfig
			e.what, e.effect = fmt.Sprintf("%s in ConfigMap %s", CiliumAPIServerURLsKey, ref), ciliumEffect
			out = append(out, e)
		}
		return out, true
	case ServicesEndpointName:
		v := strings.TrimSpace(o.Data[ServicesEndpointKey])
		if v == "" {
			return nil, true
		}
		return []endpoint{{field: field.NewPath("data").Key(ServicesEndpointKey), rule: RuleServicesEndpoint, server: v, host: hostOf(v),
			what: fmt.Sprintf("%s in ConfigMap %s", ServicesEndpointKey, ref),
			effect: "every calico-node, typha and the operator that read it through envFrom reach the API server through that one node, " +
				"so when it is down no node's networking is updated"}}, true
	}
	if !policy.ListedConfigMap(cl, o.Namespace, o.Name) {
		return nil, false
	}
	var out []endpoint
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range o.Data {
			if !yield(k) {
				return
			}
		}
	}) {
		v := strings.TrimSpace(o.Data[k])
		if v == "" || strings.ContainsAny(v, " \t\n,") {
			continue // not one endpoint
		}
		out = append(out, endpoint{field: field.NewPath("data").Key(k), rule: RuleEndpointConfigMap, server: v, host: hostOf(v),
			what: fmt.Sprintf("key %q of ConfigMap %s (%s)", k, ref, policy.EndpointConfigMapsSetting),
			effect: "the hostNetwork pods that read their API endpoint from it (Cilium's k8sServiceHostRef, an envFrom) reach the API server " +
				"through that one node and lose it with that node"})
	}
	return out, true
}

// urlList reads a list of URLs, space or comma separated, as Cilium's
// k8s-api-server-urls: ok is false when it holds none.
func urlList(v string) (endpoint, bool) {
	urls := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '"' || r == '\'' })
	if len(urls) == 0 {
		return endpoint{}, false
	}
	e := endpoint{server: strings.Join(urls, " "), host: hostOf(urls[0])}
	for _, u := range urls {
		e.hosts = append(e.hosts, hostOf(u))
	}
	return e, true
}

// ciliumFlagEndpoints returns the endpoints of Cilium's --k8s-api-server and
// --k8s-api-server-urls in a hostNetwork pod spec's containers, and whether
// any container has them.
func ciliumFlagEndpoints(spec *corev1.PodSpec, specPath *field.Path) ([]endpoint, bool) {
	var out []endpoint
	for _, l := range []struct {
		containers []corev1.Container
		list       string
	}{{spec.InitContainers, "initContainers"}, {spec.Containers, "containers"}} {
		for i := range l.containers {
			c := &l.containers[i]
			if !mentions(c, "--k8s-api-server") {
				continue // every container of every hostNetwork pod comes here: no allocation
			}
			for _, name := range []string{"--" + CiliumAPIServerKey, "--" + CiliumAPIServerURLsKey} {
				for _, f := range flagValues(c, name) {
					e, ok := urlList(f.value)
					if !ok {
						continue
					}
					e.field = specPath.Child(l.list).Index(i).Child(f.list).Index(f.index)
					e.rule = RuleCiliumFlag
					e.what = fmt.Sprintf("%s in container %q", name, c.Name)
					e.effect = "this Cilium component reaches the API server through that one node only, so when it is down it loses the API server"
					out = append(out, e)
				}
			}
		}
	}
	return out, len(out) > 0
}

// mentions reports whether a word of c's command or args contains s.
func mentions(c *corev1.Container, s string) bool {
	for _, argv := range [][]string{c.Command, c.Args} {
		for _, a := range argv {
			if strings.Contains(a, s) {
				return true
			}
		}
	}
	return false
}

// owner returns the control-plane node all of e's hosts are addresses of,
// when that is one node: a list that names two nodes, or a VIP, fails over.
func (e endpoint) owner(nodes []*corev1.Node) *corev1.Node {
	hosts := e.hosts
	if len(hosts) == 0 {
		hosts = []string{e.host}
	}
	var owner *corev1.Node
	for _, h := range hosts {
		n := soleOwner(h, nodes)
		if n == nil || (owner != nil && owner.Name != n.Name) {
			return nil
		}
		owner = n
	}
	return owner
}
