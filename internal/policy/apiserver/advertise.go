package apiserver

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// AdvertiseAddressID is the apiserver-advertise-address policy's stable
// identifier.
const AdvertiseAddressID policy.ID = "apiserver-advertise-address"

const (
	// KubeadmConfigNamespace and KubeadmConfigName name the ConfigMap in
	// which kubeadm stores the cluster-wide configuration, under
	// ClusterConfigurationKey.
	KubeadmConfigNamespace  = "kube-system"
	KubeadmConfigName       = "kubeadm-config"
	ClusterConfigurationKey = "ClusterConfiguration"

	// KubeadmGroup is the API group of kubeadm's configuration files.
	KubeadmGroup = "kubeadm.k8s.io"
)

// AdvertiseAddressDescriptor describes the policy to the registry.
// The checks of apiserver-advertise-address (report results' rule).
const (
	// RuleClusterConfiguration: advertise-address in the cluster-wide
	// ClusterConfiguration, which every control-plane node then shares.
	RuleClusterConfiguration = "cluster-wide-advertise-address"
	// RuleNotNodeAddress: a kube-apiserver advertising an address that is
	// not its node's.
	RuleNotNodeAddress = "address-not-of-node"
	// RuleSharedAddress: kube-apiservers on different nodes advertising one
	// address.
	RuleSharedAddress = "address-shared"
)

var AdvertiseAddressDescriptor = policy.Descriptor{
	ID:          AdvertiseAddressID,
	Effect:      policy.Validating,
	DefaultMode: policy.Enforce,
	Severity:    policy.SeverityHigh,
	Category:    policy.CategoryControlPlane,
	Summary: "`advertise-address` in the cluster-wide kubeadm `ClusterConfiguration` (`kube-system/kubeadm-config`); " +
		"kube-apiserver pods whose `--advertise-address` is not their node's or is used on another node",
	Package: "internal/policy/apiserver",
	New:     func(policy.Settings) (policy.Rule, error) { return AdvertiseAddressRule{}, nil },
}

// AdvertiseAddressRule reports an API server advertise address that is
// shared between control-plane nodes or that is not the node's own.
//
// Objects:
//   - the kubeadm-config ConfigMap (or a raw kubeadm ClusterConfiguration,
//     for the CLI): advertise-address in apiServer.extraArgs is cluster-wide,
//     so every control-plane node that joins advertises the first node's
//     address (kubespray #11423);
//   - kube-apiserver pods bound to a node: --advertise-address must be one of
//     the node's addresses and no kube-apiserver on another node may use it.
//     This needs Target.Cluster; what it does not know yields no verdict.
type AdvertiseAddressRule struct{}

var _ policy.Rule = AdvertiseAddressRule{}

// ID implements policy.Rule.
func (AdvertiseAddressRule) ID() policy.ID { return AdvertiseAddressID }

// Effect implements policy.Rule.
func (AdvertiseAddressRule) Effect() policy.Effect { return policy.Validating }

// Evaluate implements policy.Rule.
func (AdvertiseAddressRule) Evaluate(t policy.Target) ([]policy.Finding, bool) {
	if policy.Excluded(t.Object, t.NamespaceLabels) {
		return nil, false
	}
	if pod, ok := t.Object.(*corev1.Pod); ok {
		return checkPod(pod, t.Cluster)
	}
	cfg, path, ok, err := ClusterConfigurationOf(t.Object)
	switch {
	case !ok:
		return nil, false
	case err != nil:
		// kubeadm could not read it either.
		return []policy.Finding{{Field: path, Rule: RuleClusterConfiguration, Message: err.Error()}}, true
	}
	return checkClusterConfiguration(cfg, path), true
}

// checkClusterConfiguration reports advertise-address in apiServer.extraArgs,
// in the kubeadm.k8s.io/v1beta3 (and older) map form and in the v1beta4 list
// form ({name, value}, duplicates allowed: every one is reported).
func checkClusterConfiguration(cfg map[string]any, fldPath *field.Path) []policy.Finding {
	apiServer, _ := cfg["apiServer"].(map[string]any)
	extraArgs, ok := apiServer["extraArgs"]
	if !ok || extraArgs == nil {
		return nil
	}
	argsPath := child(fldPath, "apiServer", "extraArgs")
	var findings []policy.Finding
	switch args := extraArgs.(type) {
	case map[string]any: // v1beta3
		if v, ok := args["advertise-address"]; ok {
			findings = append(findings, sharedArgFinding(argsPath.Key("advertise-address"), v))
		}
	case []any: // v1beta4
		for i, arg := range args {
			if a, ok := arg.(map[string]any); ok && a["name"] == "advertise-address" {
				findings = append(findings, sharedArgFinding(argsPath.Index(i), a["value"]))
			}
		}
	default:
		findings = append(findings, policy.Finding{Field: argsPath, Rule: RuleClusterConfiguration,
			Message: fmt.Sprintf("must be a map of flag names to values (kubeadm.k8s.io/v1beta3) or a list of {name, value} (v1beta4), got %T", extraArgs)})
	}
	return findings
}

func sharedArgFinding(at *field.Path, value any) policy.Finding {
	return policy.Finding{
		Rule:  RuleClusterConfiguration,
		Field: at,
		Message: fmt.Sprintf("advertise-address=%v in apiServer.extraArgs of the cluster-wide ClusterConfiguration makes every "+
			"control-plane node that joins advertise this one address (kubespray #11423). Remove it and set each node's own "+
			"address in localAPIEndpoint.advertiseAddress of its InitConfiguration or JoinConfiguration (controlPlane.localAPIEndpoint)", value),
	}
}

// child returns fldPath.Child(names...), or a new path when fldPath is nil.
func child(fldPath *field.Path, name string, more ...string) *field.Path {
	if fldPath == nil {
		return field.NewPath(name, more...)
	}
	return fldPath.Child(name, more...)
}

// checkPod checks the advertise address of a kube-apiserver pod bound to a
// node against the cluster: the node's addresses and the other nodes'
// kube-apiservers. applies is false when nothing could be decided.
func checkPod(pod *corev1.Pod, cluster policy.Cluster) (findings []policy.Finding, applies bool) {
	if pod.Spec.NodeName == "" || cluster == nil || sharesAddressByDesign(pod) {
		return nil, false
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if !IsAPIServer(c) {
			continue
		}
		value, at, ok := AdvertiseAddress(c, field.NewPath("spec", "containers").Index(i))
		if !ok {
			continue
		}
		addr, ok := parseIP(value)
		if !ok {
			continue // "$(HOST_IP)" and the like: resolved on the node, not here
		}
		// The node that owns the address (in its status.addresses) is the
		// right one to advertise it: when others share it, they are
		// reported, not this one.
		owns := false
		if node, ok := cluster.Node(pod.Spec.NodeName); ok && len(node.Status.Addresses) > 0 {
			applies = true
			owns = nodeHasAddress(node, addr)
			if !owns {
				findings = append(findings, policy.Finding{Field: at, Rule: RuleNotNodeAddress,
					Message: fmt.Sprintf("--advertise-address %s is not an address of node %s (%s): other API servers and "+
						"clients are sent to an address this API server is not on. Advertise the node's own address "+
						"(kubeadm: localAPIEndpoint.advertiseAddress of this node's Init/JoinConfiguration)",
						addr, node.Name, nodeAddresses(node))})
			}
		}
		if others, ok := cluster.APIServerPods(); ok {
			applies = true
			if peers := sameAddressOnOtherNodes(pod, addr, others); len(peers) > 0 && !owns {
				findings = append(findings, policy.Finding{Field: at, Rule: RuleSharedAddress,
					Message: fmt.Sprintf("--advertise-address %s is already used by %s: "+
						"control-plane nodes that share an advertise address send clients to one node only. This is what "+
						"advertise-address in the kubeadm ClusterConfiguration's apiServer.extraArgs does (kubespray #11423); "+
						"set localAPIEndpoint.advertiseAddress per node instead",
						addr, describePods(peers))})
			}
		}
	}
	return findings, applies
}

// sharesAddressByDesign reports pods whose advertise address is not their
// node's by design: replicas of a hosted control plane (Kamaji, k0smotron,
// ...) run on the pod network, owned by a workload controller, and all
// advertise their Service's or load balancer's address. Static (mirror)
// pods are owned by their Node and are checked.
func sharesAddressByDesign(pod *corev1.Pod) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller != nil && *ref.Controller && ref.Kind != "Node" {
			return true
		}
	}
	return false
}

func nodeHasAddress(node *corev1.Node, addr netip.Addr) bool {
	for _, a := range node.Status.Addresses {
		if ip, ok := parseIP(a.Address); ok && ip == addr {
			return true
		}
	}
	return false
}

func nodeAddresses(node *corev1.Node) string {
	parts := make([]string, len(node.Status.Addresses))
	for i, a := range node.Status.Addresses {
		parts[i] = string(a.Type) + " " + a.Address
	}
	return strings.Join(parts, ", ")
}

// sameAddressOnOtherNodes returns the running kube-apiserver pods, other
// than pod and on other nodes, that advertise addr, by namespace and name:
// a verdict must not depend on the order a cache lists them in.
func sameAddressOnOtherNodes(pod *corev1.Pod, addr netip.Addr, others []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, other := range others {
		switch {
		case other.Namespace == pod.Namespace && other.Name == pod.Name,
			other.Spec.NodeName == "" || other.Spec.NodeName == pod.Spec.NodeName,
			other.DeletionTimestamp != nil,
			other.Status.Phase == corev1.PodSucceeded || other.Status.Phase == corev1.PodFailed,
			sharesAddressByDesign(other):
			continue
		}
		for i := range other.Spec.Containers {
			c := &other.Spec.Containers[i]
			if !IsAPIServer(c) {
				continue
			}
			if v, _, ok := AdvertiseAddress(c, nil); ok {
				if a, ok := parseIP(v); ok && a == addr {
					out = append(out, other)
					break
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b *corev1.Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

// describePods names pods and their nodes: "kube-apiserver pod ns/a on node
// x" or "kube-apiserver pods ns/a on node x, ns/b on node y".
func describePods(pods []*corev1.Pod) string {
	parts := make([]string, len(pods))
	for i, p := range pods {
		parts[i] = fmt.Sprintf("%s/%s on node %s", p.Namespace, p.Name, p.Spec.NodeName)
	}
	if len(pods) == 1 {
		return "kube-apiserver pod " + parts[0]
	}
	return "kube-apiserver pods " + strings.Join(parts, ", ")
}
