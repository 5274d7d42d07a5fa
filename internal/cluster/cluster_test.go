package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
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
				ObjectMeta: metav1.ObjectMeta{Name: "n", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
				Status: corev1.NodeStatus{
					Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
					Images:    []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1}},
				},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}},
			}
			out, err := by.Transform(n)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Node)
			if got.Status.Images != nil || got.ManagedFields != nil {
				t.Errorf("images and managed fields kept: %+v", got)
			}
			if len(got.Status.Addresses) != 1 || len(got.Spec.Taints) != 1 {
				t.Errorf("addresses or taints dropped: %+v", got)
			}
		default:
			t.Errorf("unexpected cached type %T", obj)
		}
	}
	if len(opts.ByObject) != 2 {
		t.Errorf("cache options for %d types, want Pods and Nodes", len(opts.ByObject))
	}
}
