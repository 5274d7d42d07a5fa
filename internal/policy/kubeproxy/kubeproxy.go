// Package kubeproxy implements the policies on kube-proxy's health on nodes
// that are being deleted: kube-proxy-node-deleting and
// kube-proxy-readiness-probe.
//
// Since Kubernetes v1.30 (KEP-3836, feature gate
// KubeProxyDrainingTerminatingNodes, GA in v1.31) kube-proxy's /healthz fails
// on purpose while its node has a deletionTimestamp or a taint with key
// ToBeDeletedByClusterAutoscaler, so that load balancers drain the node.
// Health tooling that counts every unready kube-proxy as a failure then pages
// people for an expected state (Gardener issue #11858).
package kubeproxy

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

const (
	// ContainerName is the kube-proxy container's name in kubeadm's
	// DaemonSet (and most others).
	ContainerName = "kube-proxy"

	// ToBeDeletedTaint is the taint cluster-autoscaler puts on a node it is
	// about to delete (effect NoSchedule, value a Unix timestamp). kube-proxy
	// fails /healthz while it is there.
	ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"
	// DeletionCandidateTaint is cluster-autoscaler's soft taint
	// (PreferNoSchedule) on nodes it may delete later. kube-proxy ignores it,
	// and so do these policies.
	DeletionCandidateTaint = "DeletionCandidateOfClusterAutoscaler"

	// NodeDeletingAnnotation, on a kube-proxy pod, says that its node is
	// being deleted and why: ReasonToBeDeleted or ReasonNodeDeletion.
	NodeDeletingAnnotation = "endpoint-policy.io/node-deleting"
	// NodeDeletingSinceAnnotation, on a kube-proxy pod, is when its node
	// started being deleted, in RFC 3339.
	NodeDeletingSinceAnnotation = "endpoint-policy.io/node-deleting-since"

	// ReasonToBeDeleted: the node has cluster-autoscaler's ToBeDeleted taint.
	ReasonToBeDeleted = ToBeDeletedTaint
	// ReasonNodeDeletion: the node has a deletionTimestamp.
	ReasonNodeDeletion = "NodeDeletion"
)

// IsKubeProxy reports whether c runs kube-proxy: it is named kube-proxy, or
// its command (or, without a command, its args) starts with a kube-proxy
// binary.
func IsKubeProxy(c *corev1.Container) bool { return policy.RunsBinary(c, ContainerName) }

// IsKubeProxyPod is the one definition of a kube-proxy pod (or pod
// template) that both kube-proxy policies use: its labels match one of
// selectors (kube-proxy-node-deleting's podSelectors, DefaultPodSelectors by
// default: kubeadm's, static pods', Gardener's), or one of its containers
// runs kube-proxy. spec may be nil (a cached pod without containers).
func IsKubeProxyPod(podLabels map[string]string, spec *corev1.PodSpec, selectors []labels.Selector) bool {
	return selected(podLabels, selectors) || len(kubeProxyContainers(podLabels, spec, selectors)) > 0
}

// kubeProxyContainers returns the indexes of the containers of a kube-proxy
// pod that run kube-proxy: those IsKubeProxy recognises, or the only
// container of a pod whose labels say it is kube-proxy.
func kubeProxyContainers(podLabels map[string]string, spec *corev1.PodSpec, selectors []labels.Selector) []int {
	if spec == nil {
		return nil
	}
	var out []int
	for i := range spec.Containers {
		if IsKubeProxy(&spec.Containers[i]) {
			out = append(out, i)
		}
	}
	if len(out) == 0 && len(spec.Containers) == 1 && selected(podLabels, selectors) {
		out = append(out, 0)
	}
	return out
}

func selected(podLabels map[string]string, selectors []labels.Selector) bool {
	set := labels.Set(podLabels)
	for _, s := range selectors {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

// defaultSelectors are DefaultPodSelectors parsed: what
// kube-proxy-readiness-probe, which has no settings, recognises.
var defaultSelectors = func() []labels.Selector {
	out, err := DefaultSettings().Selectors()
	if err != nil {
		panic(err) // constant input
	}
	return out
}()

// Deletion is why and since when a node is being deleted.
type Deletion struct {
	// Reason is ReasonToBeDeleted or ReasonNodeDeletion.
	Reason string
	// Since is when it started; zero when the node does not say.
	Since time.Time
}

// Deletions returns every reason kube-proxy has to fail /healthz on node,
// the taint first (cluster-autoscaler taints a node before it deletes it).
// It returns nothing for a node that is not being deleted.
func Deletions(node *corev1.Node) []Deletion {
	var out []Deletion
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Key != ToBeDeletedTaint {
			continue
		}
		d := Deletion{Reason: ReasonToBeDeleted}
		// cluster-autoscaler writes the Unix time it tainted the node as the
		// taint's value; TimeAdded is only set for NoExecute taints.
		if secs, err := strconv.ParseInt(t.Value, 10, 64); err == nil && secs > 0 {
			d.Since = time.Unix(secs, 0).UTC()
		} else if t.TimeAdded != nil {
			d.Since = t.TimeAdded.UTC()
		}
		out = append(out, d)
		break
	}
	if node.DeletionTimestamp != nil {
		out = append(out, Deletion{Reason: ReasonNodeDeletion, Since: node.DeletionTimestamp.UTC()})
	}
	return out
}
