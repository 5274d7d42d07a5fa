package cluster

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

func TestCacheOptionsHoldOnlyWhatPoliciesRead(t *testing.T) {
	opts := CacheOptions()
	for obj, by := range opts.ByObject {
		switch obj.(type) {
		case *corev1.Pod:
			if by.Label == nil || !by.Label.Matches(labels.Set{"component": "kube-apiserver"}) || by.Label.Matches(labels.Set{"app": "web"}) {
				t.Errorf("pods are selected by %v, want only component=kube-apiserver", by.Label)
			}
		case *corev1.Node:
			n := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "n", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
					Labels: map[string]string{"kubernetes.io/os": "linux"}, Annotations: map[string]string{"csi.volume.kubernetes.io/nodeid": "{}"}},
				Status: corev1.NodeStatus{
					Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
					Images:     []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1}},
					Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
					NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"},
				},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}},
			}
			n.DeletionTimestamp = &metav1.Time{}
			out, err := by.Transform(n)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Node)
			if got.Status.Images != nil || got.ManagedFields != nil || got.Annotations != nil || got.Status.Conditions != nil || got.Status.NodeInfo.KubeletVersion != "" {
				t.Errorf("images, managed fields, annotations, conditions or node info kept: %+v", got)
			}
			if len(got.Status.Addresses) != 1 || len(got.Spec.Taints) != 1 || got.DeletionTimestamp == nil || got.Labels["kubernetes.io/os"] != "linux" {
				t.Errorf("addresses, taints, labels or deletionTimestamp dropped: %+v", got)
			}
		case *corev1.Namespace:
			ns := &corev1.Namespace{
				ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"endpoint-policy.io/exclude": "true"},
					ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
				Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
			}
			out, err := by.Transform(ns)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Namespace)
			if got.ManagedFields != nil || got.Spec.Finalizers != nil || got.Labels["endpoint-policy.io/exclude"] != "true" {
				t.Errorf("namespace not reduced to its metadata: %+v", got)
			}
		default:
			t.Errorf("unexpected cached type %T", obj)
		}
	}
	if len(opts.ByObject) != 3 {
		t.Errorf("cache options for %d types, want Pods, Nodes and Namespaces", len(opts.ByObject))
	}
}

// nodes is a policy.Cluster that knows some nodes.
type nodes map[string]*corev1.Node

func (n nodes) Node(name string) (*corev1.Node, bool) { node, ok := n[name]; return node, ok }

func (nodes) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }

// kubeProxyPod is a kube-proxy pod as the DaemonSet controller and the
// kubelet leave it (kubernetes/pkg/controller/daemon: the controller
// reference and the pod-template labels; the kubelet's status), carrying
// annotations.
func kubeProxyPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-x7k2p", GenerateName: "kube-proxy-", Namespace: "kube-system", UID: "u", ResourceVersion: "12",
			Labels:      map[string]string{"k8s-app": "kube-proxy", "controller-revision-hash": "7b9c6d5f4", "pod-template-generation": "1"},
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "kube-proxy", UID: "ds", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)},
				{APIVersion: "v1", Kind: "ConfigMap", Name: "not-the-controller", UID: "cm"},
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{NodeName: "n1", HostNetwork: true, Containers: []corev1.Container{{Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.37.2",
			Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
	}
}

// What SelectedPods keeps of a kube-proxy pod gives kube-proxy-node-deleting
// the verdicts the whole pod gives, and an exemption of its DaemonSet the
// same match.
func TestKubeProxyPodKeepsWhatTheControllerReads(t *testing.T) {
	rule, err := kubeproxy.NewNodeDeletingRule(kubeproxy.DefaultSettings(), func() time.Time { return time.Unix(1_700_000_000, 0) })
	if err != nil {
		t.Fatal(err)
	}
	deleting := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "ToBeDeletedByClusterAutoscaler", Value: "1700000000", Effect: corev1.TaintEffectNoSchedule}}}}
	notDeleting := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	annotated := map[string]string{kubeproxy.NodeDeletingAnnotation: "ToBeDeletedByClusterAutoscaler",
		kubeproxy.NodeDeletingSinceAnnotation: "2023-11-14T22:13:20Z", "other": "x"}
	exemption := &policy.Exemption{Name: "ds", Policies: []policy.ID{policy.AllPolicies}, Kinds: []string{"DaemonSet"}, Names: []string{"kube-proxy"}, Namespace: "kube-system"}
	for _, tt := range []struct {
		name        string
		node        *corev1.Node
		annotations map[string]string
		finds       bool
	}{
		{"node being deleted, pod not annotated", deleting, map[string]string{"other": "x"}, true},
		{"node being deleted, pod annotated", deleting, annotated, false},
		{"node no longer deleted, pod annotated", notDeleting, annotated, true},
		{"node not deleted, no annotations", notDeleting, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			whole := kubeProxyPod(tt.annotations)
			out, err := projectKubeProxyPod(whole.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			kept := out.(*KubeProxyPod)
			if again, _ := projectKubeProxyPod(kept); again != kept {
				t.Error("a projected pod projected again is not itself")
			}
			c := nodes{"n1": tt.node}
			want, wantApplies := rule.Evaluate(policy.Target{Object: whole, Cluster: c})
			got, gotApplies := rule.Evaluate(policy.Target{Object: kept.Pod(), Cluster: c})
			if gotApplies != wantApplies || !slices.Equal(verdicts(got), verdicts(want)) {
				t.Errorf("on the kept pod: %v %v; on the whole pod: %v %v", gotApplies, verdicts(got), wantApplies, verdicts(want))
			}
			if (len(want) > 0) != tt.finds {
				t.Errorf("findings on the whole pod: %v, want some: %v", verdicts(want), tt.finds)
			}
			if at := time.Now(); !exemption.Matches(kubeproxy.NodeDeletingID, kept.Pod(), at) || !exemption.Matches(kubeproxy.NodeDeletingID, whole, at) {
				t.Error("the DaemonSet's exemption does not match the kept pod")
			}
			if len(kept.ManagedFields) != 0 || len(kept.OwnerReferences) != 1 || kept.Annotations["other"] != "" {
				t.Errorf("kept more than the controller reads: %+v", kept)
			}
			if got, _ := indexNodeName(kept); len(got) != 1 || got[0] != "n1" {
				t.Errorf("indexNodeName = %v, want [n1]", got)
			}
		})
	}
	if got, _ := indexNodeName(&KubeProxyPod{}); got != nil {
		t.Errorf("indexNodeName of an unbound pod = %v, want none", got)
	}
}

func verdicts(findings []policy.Finding) []string {
	var out []string
	for _, f := range findings {
		out = append(out, fmt.Sprintf("%s %s %s %v %v", f.Field, f.Rule, f.Message, f.Annotations, f.RemoveAnnotations))
	}
	return out
}

// BenchmarkKubeProxyPodStore: the heap that 5,000 kube-proxy pods take in
// SelectedPods' store (after a garbage collection), per pod: kept as
// *corev1.Pod slimmed to its metadata, node and phase (before), and as
// KubeProxyPod.
func BenchmarkKubeProxyPodStore(b *testing.B) {
	const n = 5000
	for _, bb := range []struct {
		name string
		keep func(*corev1.Pod) any
	}{
		{"slim-pod", func(p *corev1.Pod) any {
			slim := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: p.ObjectMeta}
			slim.ManagedFields = nil
			slim.Spec.NodeName, slim.Status.Phase = p.Spec.NodeName, p.Status.Phase
			return slim
		}},
		{"kube-proxy-pod", func(p *corev1.Pod) any { obj, _ := projectKubeProxyPod(p); return obj }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			var perPod float64
			for b.Loop() {
				store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
				before := heapInUse()
				for i := range n {
					// As the watch decodes it: a pod of its own.
					p := kubeProxyPod(map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"})
					p.Name, p.UID, p.Spec.NodeName = fmt.Sprintf("kube-proxy-%05d", i), types.UID(fmt.Sprintf("uid-%05d", i)), fmt.Sprintf("node-%05d", i)
					if err := store.Add(bb.keep(p)); err != nil {
						b.Fatal(err)
					}
				}
				perPod = float64(heapInUse()-before) / n
				runtime.KeepAlive(store)
			}
			b.ReportMetric(perPod, "B/pod")
		})
	}
}
