// Package kinds is the table of object kinds the policies read, with the
// decoder of their JSON into the typed objects the rules see.
//
// Who decodes with it: the validating webhooks and the check CLI. The pod
// mutator decodes only the fields the mutating rules may read
// (policy.MutationPod, in the same pass as the review); the background audit
// and the kube-proxy controller read typed objects from the informer cache,
// which client-go decoded. All give the rules the same typed values for the
// fields they read, which the front-end parity spec
// (test/integration/frontends_test.go) checks.
package kinds

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsjson "sigs.k8s.io/json"
)

// Kind is one object kind: its group/version/kind, its resource and the Go
// type it decodes into.
type Kind struct {
	GVK      schema.GroupVersionKind
	Resource metav1.GroupVersionResource
	new      func() client.Object
}

func of[T any, PT interface {
	*T
	client.Object
}](group, version, kind, resource string) Kind {
	return Kind{
		GVK:      schema.GroupVersionKind{Group: group, Version: version, Kind: kind},
		Resource: metav1.GroupVersionResource{Group: group, Version: version, Resource: resource},
		new:      func() client.Object { return PT(new(T)) },
	}
}

// The kinds the policies read.
var (
	Pod         = of[corev1.Pod]("", "v1", "Pod", "pods")
	Deployment  = of[appsv1.Deployment]("apps", "v1", "Deployment", "deployments")
	StatefulSet = of[appsv1.StatefulSet]("apps", "v1", "StatefulSet", "statefulsets")
	DaemonSet   = of[appsv1.DaemonSet]("apps", "v1", "DaemonSet", "daemonsets")
	ReplicaSet  = of[appsv1.ReplicaSet]("apps", "v1", "ReplicaSet", "replicasets")
	Job         = of[batchv1.Job]("batch", "v1", "Job", "jobs")
	CronJob     = of[batchv1.CronJob]("batch", "v1", "CronJob", "cronjobs")
	ConfigMap   = of[corev1.ConfigMap]("", "v1", "ConfigMap", "configmaps")
	Node        = of[corev1.Node]("", "v1", "Node", "nodes")
	Namespace   = of[corev1.Namespace]("", "v1", "Namespace", "namespaces")
)

// Workloads are pods and the workload kinds with a pod template.
var Workloads = []Kind{Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob}

// All is every kind in this package.
var All = append(append([]Kind{}, Workloads...), ConfigMap, Node, Namespace)

// ForGVK returns the kind with gvk, if the policies read it.
func ForGVK(gvk schema.GroupVersionKind) (Kind, bool) {
	for _, k := range All {
		if k.GVK == gvk {
			return k, true
		}
	}
	return Kind{}, false
}

// New returns a new, empty object of k's type.
func (k Kind) New() client.Object { return k.new() }

// String renders k as "<apiVersion> <Kind>", e.g. "apps/v1 Deployment".
func (k Kind) String() string {
	apiVersion, kind := k.GVK.ToAPIVersionAndKind()
	return apiVersion + " " + kind
}

// Decode decodes raw JSON into k's type, case-sensitively like the API
// server, and checks its kind. Fields the type does not know are ignored, as
// admission ignores them. Errors name what was expected ("a v1 Pod").
func (k Kind) Decode(raw []byte) (client.Object, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("no object")
	}
	obj := k.new()
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, obj); err != nil {
		return nil, fmt.Errorf("cannot decode object as a %s: %w", k, err)
	}
	if gvk := obj.GetObjectKind().GroupVersionKind(); !gvk.Empty() && gvk != k.GVK {
		apiVersion, kind := gvk.ToAPIVersionAndKind()
		return nil, fmt.Errorf("object is a %s %s, not a %s", apiVersion, kind, k)
	}
	return obj, nil
}

// Of returns the kind of obj's Go type, if the policies read it: typed
// objects from an informer cache carry no kind of their own.
func Of(obj client.Object) (Kind, bool) {
	switch obj.(type) {
	case *corev1.Pod:
		return Pod, true
	case *appsv1.Deployment:
		return Deployment, true
	case *appsv1.StatefulSet:
		return StatefulSet, true
	case *appsv1.DaemonSet:
		return DaemonSet, true
	case *appsv1.ReplicaSet:
		return ReplicaSet, true
	case *batchv1.Job:
		return Job, true
	case *batchv1.CronJob:
		return CronJob, true
	case *corev1.ConfigMap:
		return ConfigMap, true
	case *corev1.Node:
		return Node, true
	case *corev1.Namespace:
		return Namespace, true
	}
	return Kind{}, false
}

// Names returns the Kind names of ks ("Pod", "DaemonSet", ...).
func Names(ks []Kind) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.GVK.Kind
	}
	return out
}
