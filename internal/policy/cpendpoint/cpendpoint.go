// Package cpendpoint is the control-plane-endpoint policy: one control-plane
// node's own address used as the whole cluster's API endpoint, in the
// cluster configuration that kubelets, joining nodes, kube-proxy and CNI
// installers read.
package cpendpoint

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

// ID is the control-plane-endpoint policy's stable identifier.
const ID policy.ID = "control-plane-endpoint"

// The ConfigMaps the policy reads besides kubeadm-config
// (apiserver.KubeadmConfigNamespace/Name).
const (
	// ClusterInfoNamespace/Name: kubeadm's discovery ConfigMap, a kubeconfig
	// under ClusterInfoKey, written from controlPlaneEndpoint.
	ClusterInfoNamespace = "kube-public"
	ClusterInfoName      = "cluster-info"
	ClusterInfoKey       = "kubeconfig"
	// KubeProxyNamespace/Name: kube-proxy's ConfigMap as kubeadm writes it,
	// its kubeconfig under KubeProxyKubeconfigKey.
	KubeProxyNamespace     = "kube-system"
	KubeProxyName          = "kube-proxy"
	KubeProxyKubeconfigKey = "kubeconfig.conf"
	// ControlPlaneLabel marks a control-plane Node (kubeadm, and most
	// distributions since Kubernetes 1.20).
	ControlPlaneLabel = "node-role.kubernetes.io/control-plane"
)

// The checks of the policy (report results' rule).
const (
	RuleKubeadm         = "kubeadm-control-plane-endpoint"
	RuleClusterInfo     = "cluster-info-server"
	RuleKubeProxyConfig = "kube-proxy-kubeconfig-server"
	RuleKubeProxyMaster = "kube-proxy-master"
)

// Descriptor describes the policy to the registry.
var Descriptor = policy.Descriptor{
	ID:     ID,
	Effect: policy.Validating,
	// Changing the endpoint of a running cluster is a migration (new
	// certificate SANs, every kubelet's kubeconfig): report, do not block.
	DefaultMode: policy.Audit,
	Severity:    policy.SeverityHigh,
	Category:    policy.CategoryAPIEndpoint,
	Summary: "one control-plane node's own address used as the whole cluster's API endpoint, in a cluster of two or more: " +
		"kubeadm `controlPlaneEndpoint`, `kube-public/cluster-info`, kube-proxy's kubeconfig in `kube-system/kube-proxy`, " +
		"`kube-proxy --master`, and where CNIs keep it: Cilium's `cilium-config` (`k8s-api-server`, `k8s-api-server-urls`) and " +
		"`--k8s-api-server` flags, Calico's `kubernetes-services-endpoint`, the ConfigMaps of `endpointConfigMaps`",
	Package: "internal/policy/cpendpoint",
	New:     func(policy.Settings) (policy.Rule, error) { return Rule{}, nil },
}

// LabelledNodes is what the rule needs of a front-end besides
// policy.Cluster: the nodes that carry a label. A Cluster that does not
// implement it, or does not know, gives no verdict.
type LabelledNodes interface {
	// NodesLabelled returns the nodes with label key; ok is false when the
	// front-end cannot tell (a cache not synced, no Node in check's files).
	NodesLabelled(key string) (nodes []*corev1.Node, ok bool)
}

// ControlPlaneNodes returns the control-plane nodes the cluster knows: those
// labelled ControlPlaneLabel, and those running a kube-apiserver pod, sorted
// by name. ok is false when the cluster cannot tell.
func ControlPlaneNodes(c policy.Cluster) (nodes []*corev1.Node, ok bool) {
	l, isLabelled := c.(LabelledNodes)
	if c == nil || !isLabelled {
		return nil, false
	}
	labelled, ok := l.NodesLabelled(ControlPlaneLabel)
	if !ok {
		return nil, false
	}
	pods, ok := c.APIServerPods()
	if !ok {
		return nil, false
	}
	byName := map[string]*corev1.Node{}
	for _, n := range labelled {
		byName[n.Name] = n
	}
	for _, p := range pods {
		if p.Spec.NodeName == "" || byName[p.Spec.NodeName] != nil {
			continue
		}
		if n, ok := c.Node(p.Spec.NodeName); ok {
			byName[n.Name] = n
		}
	}
	nodes = make([]*corev1.Node, 0, len(byName))
	for _, n := range byName {
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes, true
}

// Rule reports an API endpoint whose host is an address of exactly one
// control-plane node when the cluster has two or more: every client
// configured with it loses the API server with that node.
//
// Objects:
//   - kube-system/kubeadm-config (and kubeadm ClusterConfiguration files,
//     v1beta3 and v1beta4): controlPlaneEndpoint;
//   - kube-public/cluster-info: the server of its kubeconfig;
//   - kube-system/kube-proxy: the server of kubeconfig.conf;
//   - pods and pod templates whose container runs kube-proxy with --master;
//   - where CNIs keep it (cni.go): cilium-config, kubernetes-services-endpoint,
//     the ConfigMaps of endpointConfigMaps, and Cilium's flags in hostNetwork
//     pods and templates.
//
// A DNS name, a loopback address, a VIP or load balancer address that is no
// node's, and a cluster with one control-plane node are fine.
type Rule struct{}

var _ policy.Rule = Rule{}

// ID implements policy.Rule.
func (Rule) ID() policy.ID { return ID }

// Effect implements policy.Rule.
func (Rule) Effect() policy.Effect { return policy.Validating }

// endpoint is one API endpoint found in an object.
type endpoint struct {
	field  *field.Path
	rule   string
	server string // as written
	host   string
	// hosts, when set, are every host of a list the client fails over
	// among (Cilium's k8s-api-server-urls); host is then the first.
	hosts  []string
	what   string // the object and field, for the message
	effect string // what breaks when the node goes
}

// Evaluate implements policy.Rule.
func (Rule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	if policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	endpoints, applies, parseErr := endpointsOf(t)
	if !applies {
		return nil, false
	}
	var findings []policy.Finding
	if parseErr != nil {
		findings = append(findings, *parseErr)
	}
	if len(endpoints) == 0 {
		return findings, true
	}
	nodes, known := ControlPlaneNodes(t.Cluster)
	if !known {
		return findings, len(findings) > 0
	}
	if len(nodes) < 2 {
		return findings, true // one API server: there is no other to reach
	}
	for _, e := range endpoints {
		node := e.owner(nodes)
		if node == nil {
			continue
		}
		findings = append(findings, policy.Finding{
			Field: e.field,
			Rule:  e.rule,
			Message: fmt.Sprintf("%s is %s, the address of control-plane node %s only, one of %d: %s. "+
				"Use a load-balanced name or VIP in front of every API server (kube-vip, keepalived, an external load balancer)%s",
				e.what, e.server, node.Name, len(nodes), e.effect, fixFor(e.rule)),
		})
	}
	return findings, true
}

// fixFor adds what fits the object to the fix.
func fixFor(rule string) string {
	switch rule {
	case RuleKubeProxyConfig, RuleKubeProxyMaster, RuleCiliumConfig, RuleCiliumFlag, RuleServicesEndpoint, RuleEndpointConfigMap:
		return ", or for node components the node-local API load balancer host-network-endpoint points them at (localhost:7443 on k0s)"
	case RuleKubeadm:
		return "; the endpoint must be in the API server certificate's SANs, and every kubelet's kubeconfig and kube-public/cluster-info change with it"
	}
	return ""
}

// endpointsOf returns the API endpoints obj carries, and whether the policy
// applies to it at all. A value that cannot be read is a finding.
func endpointsOf(t policy.Target) (out []endpoint, applies bool, bad *policy.Finding) {
	if cfg, path, ok, err := apiserver.ClusterConfigurationOf(t.Object); ok {
		if err != nil {
			return nil, true, &policy.Finding{Field: path, Rule: RuleKubeadm, Message: err.Error()}
		}
		return kubeadmEndpoint(cfg, path.Child("controlPlaneEndpoint")), true, nil
	}
	if o, ok := t.Object.(*corev1.ConfigMap); ok {
		switch {
		case o.Namespace == ClusterInfoNamespace && o.Name == ClusterInfoName:
			return kubeconfigEndpoints(o.Data[ClusterInfoKey], field.NewPath("data").Key(ClusterInfoKey), RuleClusterInfo,
				"the server of the kubeconfig in kube-public/cluster-info",
				"kubeadm join discovers it, so nodes join through that one node, and Cilium's k8sServiceHost: auto reads it at install and "+
					"freezes it into its DaemonSet, which then loses the API server with that node")
		case o.Namespace == KubeProxyNamespace && o.Name == KubeProxyName:
			return kubeconfigEndpoints(o.Data[KubeProxyKubeconfigKey], field.NewPath("data").Key(KubeProxyKubeconfigKey), RuleKubeProxyConfig,
				"the server of kube-proxy's kubeconfig in kube-system/kube-proxy",
				"every kube-proxy on every node watches Services and EndpointSlices through that one API server, so when that node is down "+
					"no node's Service routing is updated")
		}
		out, applies := configMapEndpoints(o, t.Cluster)
		return out, applies, nil
	}
	spec, specPath, ok := policy.PodSpecOf(t.Object)
	if !ok {
		return nil, false, nil
	}
	if spec.HostNetwork {
		out, applies = ciliumFlagEndpoints(spec, specPath)
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if !kubeproxy.IsKubeProxy(c) && !runsKubeProxyInShell(c) {
			continue
		}
		applies = true
		for _, a := range flagValues(c, "--master") {
			out = append(out, endpoint{
				field: specPath.Child("containers").Index(i).Child(a.list).Index(a.index),
				rule:  RuleKubeProxyMaster, server: a.value, host: hostOf(a.value),
				what:   fmt.Sprintf("kube-proxy's --master in container %q", c.Name),
				effect: "this kube-proxy watches Services and EndpointSlices through that one API server, so when that node is down its node's Service routing is no longer updated",
			})
		}
	}
	return out, applies, nil
}

// kubeadmEndpoint reads controlPlaneEndpoint ("host[:port]", no scheme).
func kubeadmEndpoint(cfg map[string]any, path *field.Path) []endpoint {
	v, _ := cfg["controlPlaneEndpoint"].(string)
	if v == "" {
		return nil
	}
	host := v
	if h, _, err := net.SplitHostPort(v); err == nil {
		host = h
	}
	return []endpoint{{field: path, rule: RuleKubeadm, server: v, host: strings.Trim(host, "[]"),
		what:   "the kubeadm ClusterConfiguration's controlPlaneEndpoint",
		effect: "every kubelet and every node that joins is configured with it, and all of them lose the API server with that node"}}
}

// kubeconfigEndpoints reads the servers of a kubeconfig, clusters by name.
func kubeconfigEndpoints(data string, path *field.Path, rule, what, effect string) ([]endpoint, bool, *policy.Finding) {
	if data == "" {
		return nil, true, nil
	}
	cfg, err := clientcmd.Load([]byte(data))
	if err != nil {
		return nil, true, &policy.Finding{Field: path, Rule: rule, Message: fmt.Sprintf("cannot be parsed as a kubeconfig: %v", err)}
	}
	names := make([]string, 0, len(cfg.Clusters))
	for name := range cfg.Clusters {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []endpoint
	for _, name := range names {
		server := cfg.Clusters[name].Server
		if server == "" {
			continue
		}
		out = append(out, endpoint{field: path, rule: rule, server: server, host: hostOf(server), what: what, effect: effect})
	}
	return out, true, nil
}

// hostOf returns the host of a server URL ("https://10.0.0.11:6443"), or
// of a bare host[:port].
func hostOf(server string) string {
	if u, err := url.Parse(server); err == nil && u.Host != "" {
		return u.Hostname()
	}
	if h, _, err := net.SplitHostPort(server); err == nil {
		return strings.Trim(h, "[]")
	}
	return strings.Trim(server, "[]")
}

// soleOwner returns the control-plane node whose status.addresses hold
// host, an IP address, when exactly one does; nil for a DNS name, a
// loopback address, and an address of no control-plane node (a VIP, a load
// balancer).
func soleOwner(host string, nodes []*corev1.Node) *corev1.Node {
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsLoopback() || ip.IsUnspecified() {
		return nil
	}
	var owner *corev1.Node
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if addr, err := netip.ParseAddr(a.Address); err == nil && addr.Unmap() == ip.Unmap() {
				if owner != nil && owner.Name != n.Name {
					return nil
				}
				owner = n
				break
			}
		}
	}
	return owner
}

// flag is one --master value in a container's command or args.
type flag struct {
	list  string // command or args
	index int
	value string
}

// flagValues finds name=VALUE and name VALUE (name: "--master") in command
// and args, in a shell command line too (kube-up's GCE manifest runs
// `/bin/sh -c "exec kube-proxy --master=https://... ..."`,
// cluster/gce/manifests/kube-proxy.manifest).
func flagValues(c *corev1.Container, name string) []flag {
	var out []flag
	for _, l := range []struct {
		name string
		argv []string
	}{{"command", c.Command}, {"args", c.Args}} {
		for i, arg := range l.argv {
			words := strings.Fields(arg)
			for j, w := range words {
				switch {
				case len(w) > len(name) && w[len(name)] == '=' && strings.HasPrefix(w, name):
					out = append(out, flag{l.name, i, strings.Trim(w[len(name)+1:], `"'`)})
				case w == name:
					next := ""
					if j+1 < len(words) {
						next = words[j+1]
					} else if len(words) == 1 && i+1 < len(l.argv) {
						next = l.argv[i+1]
					}
					if next != "" {
						out = append(out, flag{l.name, i, strings.Trim(next, `"'`)})
					}
				}
			}
		}
	}
	return out
}

// runsKubeProxyInShell reports a container that runs kube-proxy from a
// shell command line (`sh -c "exec kube-proxy ..."`).
func runsKubeProxyInShell(c *corev1.Container) bool {
	for _, argv := range [][]string{c.Command, c.Args} {
		for _, a := range argv {
			if !strings.Contains(a, "kube-proxy") {
				continue // every container of every pod comes here: no allocation
			}
			for _, w := range strings.Fields(a) {
				if w == "kube-proxy" || strings.HasSuffix(w, "/kube-proxy") {
					return true
				}
			}
		}
	}
	return false
}
