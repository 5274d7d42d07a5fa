package audit

// What the audit caches, and how little of it.

import (
	"context"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
)

// audited are the kinds the audit reads: the pods and workloads, and the
// ConfigMaps of auditedConfigMaps, by kind name (Key.Kind).
var audited = func() map[string]kinds.Kind {
	m := map[string]kinds.Kind{}
	for _, k := range append(append([]kinds.Kind{}, kinds.Workloads...), kinds.ConfigMap) {
		m[k.GVK.Kind] = k
	}
	return m
}()

// lastApplied is kubectl's copy of the whole object: no policy reads it.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// AuditedConfigMaps are the ConfigMaps the policies read, each cached on its
// own (ConfigMapCacheOptions): a Role with resourceNames allows listing a
// ConfigMap by its name only, and a field selector names one.
var AuditedConfigMaps = []types.NamespacedName{
	{Namespace: apiserver.KubeadmConfigNamespace, Name: apiserver.KubeadmConfigName}, // apiserver-advertise-address, control-plane-endpoint
	{Namespace: cpendpoint.KubeProxyNamespace, Name: cpendpoint.KubeProxyName},       // control-plane-endpoint
	{Namespace: cpendpoint.ClusterInfoNamespace, Name: cpendpoint.ClusterInfoName},   // control-plane-endpoint
}

// ConfigMapCacheOptions caches the one ConfigMap nn, without managed fields.
func ConfigMapCacheOptions(nn types.NamespacedName) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {
				Namespaces: map[string]cache.Config{nn.Namespace: {}},
				Field:      fields.OneTermEqualSelector("metadata.name", nn.Name),
				Transform:  slim,
			},
		},
		ReaderFailOnMissingInformer: true,
	}
}

// CacheOptions restricts the audit's own cache to what the policies read:
// workloads without status or managed fields (the ConfigMaps have caches of
// their own, ConfigMapCacheOptions). Pods are not cached: the pod feed (pods.go) reads the
// hostNetwork ones only (the policies' pods are all hostNetwork:
// kube-apiserver and kube-vip static pods, kube-proxy; and those the
// host-network-endpoint rewrite is for), and keeps none. Pods on the pod
// network are never listed: 20,000 of them cost nothing.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:  {Transform: slim},
			&appsv1.StatefulSet{}: {Transform: slim},
			&appsv1.DaemonSet{}:   {Transform: slim},
			&appsv1.ReplicaSet{}:  {Transform: slim},
			&batchv1.Job{}:        {Transform: slim},
			&batchv1.CronJob{}:    {Transform: slim},
		},
		ReaderFailOnMissingInformer: true,
	}
}

// slim drops what no policy reads: managed fields, kubectl's copy of the
// object, status (the phase kept for pods: a finished pod is not an API
// server; pods wait in the pod feed's inbox slimmed), and
// the pod template of a ReplicaSet or Job that a Deployment or CronJob owns
// (the owner is audited, see ownedTemplate).
func slim(obj any) (any, error) {
	o, ok := obj.(client.Object)
	if !ok {
		return obj, nil
	}
	o.SetManagedFields(nil)
	if a := o.GetAnnotations(); a[lastApplied] != "" {
		delete(a, lastApplied)
		o.SetAnnotations(a)
	}
	switch w := o.(type) {
	case *corev1.Pod:
		w.Status = corev1.PodStatus{Phase: w.Status.Phase}
		slimPodSpec(&w.Spec)
	case *appsv1.Deployment:
		w.Status = appsv1.DeploymentStatus{}
	case *appsv1.StatefulSet:
		w.Status = appsv1.StatefulSetStatus{}
	case *appsv1.DaemonSet:
		w.Status = appsv1.DaemonSetStatus{}
	case *appsv1.ReplicaSet:
		w.Status = appsv1.ReplicaSetStatus{}
		if policy.OwnedTemplate(w) {
			w.Spec.Template = corev1.PodTemplateSpec{}
		}
	case *batchv1.Job:
		w.Status = batchv1.JobStatus{}
		if policy.OwnedTemplate(w) {
			w.Spec.Template = corev1.PodTemplateSpec{}
		}
	case *batchv1.CronJob:
		w.Status = batchv1.CronJobStatus{}
	}
	return obj, nil
}

// slimPodSpec drops what no policy reads of a cached pod: volumes, security
// contexts, resources, ports, mounts and lifecycle hooks, and, once the pod
// is bound to a node, the scheduling constraints (host-network-endpoint's
// verification reads them only for a pod without spec.nodeName). Thousands
// of DaemonSet pods carry the DaemonSet controller's seven tolerations and a
// node affinity each (docs/performance.md, bench-scale).
// TestSlimKeepsWhatThePoliciesRead holds every policy's verdicts equal.
func slimPodSpec(s *corev1.PodSpec) {
	s.Volumes = nil
	s.SecurityContext = nil
	s.ImagePullSecrets = nil
	s.TopologySpreadConstraints = nil
	s.DNSConfig = nil
	s.HostAliases = nil
	if s.NodeName != "" {
		s.Affinity, s.Tolerations, s.NodeSelector = nil, nil, nil
	} else if s.Affinity != nil {
		s.Affinity = &corev1.Affinity{NodeAffinity: s.Affinity.NodeAffinity}
	}
	for _, cs := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range cs {
			c := &cs[i]
			c.Resources = corev1.ResourceRequirements{}
			c.VolumeMounts, c.VolumeDevices, c.Ports = nil, nil, nil
			c.SecurityContext, c.Lifecycle = nil, nil
		}
	}
	s.EphemeralContainers = nil
}

// configMapSyncTimeout bounds how long the audit waits for a ConfigMap's
// cache before auditing without it.
const configMapSyncTimeout = 30 * time.Second

// configMapCache is the cache of one of AuditedConfigMaps. It may never
// sync (RBAC from an older chart, without the Role that lists it): the
// audit then reads the ConfigMap as absent, logs why, and audits everything
// else, rather than stopping the leader (a controller whose source never
// syncs fails to start, and the manager with it).
type configMapCache struct {
	cache.Cache
	synced atomic.Bool
}

// reader returns the cache once it has synced, and nothing until then.
func (c *configMapCache) reader() client.Reader {
	if c.synced.Load() {
		return c.Cache
	}
	return notFound{}
}

// waitForSync marks the cache synced once it is; it logs, once, when that
// takes longer than configMapSyncTimeout.
func (c *configMapCache) waitForSync(ctx context.Context, nn types.NamespacedName) {
	short, cancel := context.WithTimeout(ctx, configMapSyncTimeout)
	defer cancel()
	if c.WaitForCacheSync(short) {
		c.synced.Store(true)
		return
	}
	if ctx.Err() != nil {
		return
	}
	logf.FromContext(ctx).WithName(Name).Error(nil, "Cannot list the ConfigMap: its policies' verdicts on it are missing until it can be "+
		"(does the Role that lets the server list it by name exist? helm upgrade installs it)", "configMap", nn, "waited", configMapSyncTimeout)
	if c.WaitForCacheSync(ctx) {
		c.synced.Store(true)
	}
}

// nonBlocking is a source the controller does not wait for: see
// configMapCache.
type nonBlocking struct {
	source.TypedSource[Key]
}

// notFound reads nothing: a ConfigMap the audit does not read, or whose
// cache has not synced.
type notFound struct{}

func (notFound) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, key.Name)
}

func (notFound) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }
