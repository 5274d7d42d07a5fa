package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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

func TestSlimPodKeepsWhatTheControllerReads(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-x", Namespace: "kube-system", UID: "u",
			Labels: map[string]string{"k8s-app": "kube-proxy"}, Annotations: map[string]string{"a": "b"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "kube-proxy", Image: "x"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
	}
	out, err := slimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Pod)
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-x", Namespace: "kube-system", UID: "u",
			Labels: map[string]string{"k8s-app": "kube-proxy"}, Annotations: map[string]string{"a": "b"}},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("slimPod = %+v, want %+v", got, want)
	}
	if got := indexNodeName(got); len(got) != 1 || got[0] != "n1" {
		t.Errorf("indexNodeName = %v, want [n1]", got)
	}
	if got := indexNodeName(&corev1.Pod{}); got != nil {
		t.Errorf("indexNodeName of an unbound pod = %v, want none", got)
	}
}
