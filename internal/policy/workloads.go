package policy

import (
	"path"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PodSpecOf returns the pod spec that obj runs and its field path: a Pod's
// spec, or the pod template of a Deployment, StatefulSet, DaemonSet,
// ReplicaSet, Job or CronJob. ok is false for other kinds.
func PodSpecOf(obj client.Object) (spec *corev1.PodSpec, path *field.Path, ok bool) {
	template := field.NewPath("spec", "template", "spec")
	switch o := obj.(type) {
	case *corev1.Pod:
		return &o.Spec, field.NewPath("spec"), true
	case *appsv1.Deployment:
		return &o.Spec.Template.Spec, template, true
	case *appsv1.StatefulSet:
		return &o.Spec.Template.Spec, template, true
	case *appsv1.DaemonSet:
		return &o.Spec.Template.Spec, template, true
	case *appsv1.ReplicaSet:
		return &o.Spec.Template.Spec, template, true
	case *batchv1.Job:
		return &o.Spec.Template.Spec, template, true
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template.Spec, field.NewPath("spec", "jobTemplate", "spec", "template", "spec"), true
	}
	return nil, nil, false
}

// PodLabelsOf returns the labels of the pods obj runs: a Pod's, or its pod
// template's (the kinds of PodSpecOf).
func PodLabelsOf(obj client.Object) map[string]string {
	switch o := obj.(type) {
	case *corev1.Pod:
		return o.Labels
	case *appsv1.Deployment:
		return o.Spec.Template.Labels
	case *appsv1.StatefulSet:
		return o.Spec.Template.Labels
	case *appsv1.DaemonSet:
		return o.Spec.Template.Labels
	case *appsv1.ReplicaSet:
		return o.Spec.Template.Labels
	case *batchv1.Job:
		return o.Spec.Template.Labels
	case *batchv1.CronJob:
		return o.Spec.JobTemplate.Spec.Template.Labels
	}
	return nil
}

// RunsBinary reports whether container c runs the component binary: it is
// named after it (as kubeadm names its containers), or its command (or,
// without a command, its args) starts with that binary, under any directory.
func RunsBinary(c *corev1.Container, binary string) bool {
	if c.Name == binary {
		return true
	}
	argv := c.Command
	if len(argv) == 0 {
		argv = c.Args
	}
	return len(argv) > 0 && path.Base(argv[0]) == binary
}

// IsControlled reports whether obj has a controller (an owner reference with
// controller=true), for a Pod: a ReplicaSet, DaemonSet, Job, ... or, for a
// mirror pod, its Node.
func IsControlled(obj client.Object) bool {
	return metav1.GetControllerOfNoCopy(obj) != nil
}

// MayDeny reports whether an admission front-end may deny obj in Enforce
// mode. It may not for a mirror pod (denial cannot stop the static pod the
// kubelet runs from a file, it only hides it from the API) nor for a pod that
// a controller creates (the controller would retry forever while the user
// sees nothing; the workload itself is what gets denied).
func MayDeny(obj client.Object) bool {
	if _, ok := obj.(*corev1.Pod); ok {
		return !IsMirrorPod(obj) && !IsControlled(obj)
	}
	return true
}

// OwnedTemplate reports a ReplicaSet owned by a Deployment or a Job owned
// by a CronJob: its template is its owner's, which the audit and check
// --cluster report; its pods are evaluated as pods.
func OwnedTemplate(obj client.Object) bool {
	ref := metav1.GetControllerOf(obj)
	if ref == nil {
		return false
	}
	switch obj.(type) {
	case *appsv1.ReplicaSet:
		return ref.Kind == "Deployment" && strings.HasPrefix(ref.APIVersion, "apps/")
	case *batchv1.Job:
		return ref.Kind == "CronJob" && strings.HasPrefix(ref.APIVersion, "batch/")
	}
	return false
}
