package policy_test

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

func TestPodSpecOf(t *testing.T) {
	template := corev1.PodTemplateSpec{Spec: corev1.PodSpec{NodeName: "marker"}}
	tests := []struct {
		obj      client.Object
		wantPath string
	}{
		{&corev1.Pod{Spec: corev1.PodSpec{NodeName: "marker"}}, "spec"},
		{&appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: template}}, "spec.template.spec"},
		{&appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Template: template}}, "spec.template.spec"},
		{&appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: template}}, "spec.template.spec"},
		{&appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Template: template}}, "spec.template.spec"},
		{&batchv1.Job{Spec: batchv1.JobSpec{Template: template}}, "spec.template.spec"},
		{&batchv1.CronJob{Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: template}}}},
			"spec.jobTemplate.spec.template.spec"},
	}
	for _, tt := range tests {
		spec, path, ok := policy.PodSpecOf(tt.obj)
		if !ok || spec.NodeName != "marker" || path.String() != tt.wantPath {
			t.Errorf("PodSpecOf(%T) = %v, %q, %v; want the template at %s", tt.obj, spec, path, ok, tt.wantPath)
		}
	}
	if _, _, ok := policy.PodSpecOf(&corev1.ConfigMap{}); ok {
		t.Error("a ConfigMap has no pod spec")
	}
}

func TestMayDeny(t *testing.T) {
	owner := func(kind string, controller bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: "o", Controller: ptr.To(controller)}}
	}
	tests := []struct {
		name string
		obj  client.Object
		want bool
	}{
		{"bare pod", &corev1.Pod{}, true},
		{"mirror pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{policy.MirrorPodAnnotation: "x"}}}, false},
		{"pod of a ReplicaSet", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owner("ReplicaSet", true)}}, false},
		{"pod with a non-controller owner", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owner("ConfigMap", false)}}, true},
		{"Deployment", &appsv1.Deployment{}, true},
		{"DaemonSet owned by something", &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owner("Addon", true)}}, true},
	}
	for _, tt := range tests {
		if got := policy.MayDeny(tt.obj); got != tt.want {
			t.Errorf("%s: MayDeny = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRunsBinary(t *testing.T) {
	tests := []struct {
		name string
		c    corev1.Container
		want bool
	}{
		{"named after it", corev1.Container{Name: "kube-proxy"}, true},
		{"command with a directory", corev1.Container{Name: "proxy", Command: []string{"/usr/local/bin/kube-proxy", "--v=2"}}, true},
		{"args without a command", corev1.Container{Name: "proxy", Args: []string{"kube-proxy"}}, true},
		{"the command decides when there is one", corev1.Container{Name: "proxy", Command: []string{"sh"}, Args: []string{"kube-proxy"}}, false},
		{"a binary with a longer name", corev1.Container{Name: "proxy", Command: []string{"kube-proxy-windows"}}, false},
		{"nothing", corev1.Container{Name: "proxy"}, false},
	}
	for _, tt := range tests {
		if got := policy.RunsBinary(&tt.c, "kube-proxy"); got != tt.want {
			t.Errorf("%s: RunsBinary = %v, want %v", tt.name, got, tt.want)
		}
	}
}
