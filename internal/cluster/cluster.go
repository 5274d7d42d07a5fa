// Package cluster is the admission front-end's view of cluster state: the
// manager's informer cache, restricted to what the policies need (Nodes, and
// kube-apiserver pods by label, never every pod in the cluster), read without
// API calls and without waiting.
package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
)

// CacheOptions restricts the manager's cache to what the policies read:
// only kube-apiserver pods (component=kube-apiserver), Nodes without the
// parts no policy reads (container image lists, managed fields), which are
// most of a Node's size, and Namespaces' metadata (the exclude label).
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:       {Label: labels.SelectorFromSet(labels.Set{apiserver.ComponentLabel: apiserver.ComponentValue})},
			&corev1.Node{}:      {Transform: stripNode},
			&corev1.Namespace{}: {Transform: stripNamespace},
		},
	}
}

func stripNamespace(obj any) (any, error) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		ns.ManagedFields = nil
		ns.Spec = corev1.NamespaceSpec{}
		ns.Status = corev1.NamespaceStatus{}
	}
	return obj, nil
}

func stripNode(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		n.ManagedFields = nil
		n.Status.Images = nil
		n.Status.VolumesAttached = nil
		n.Status.VolumesInUse = nil
	}
	return obj, nil
}

// View implements policy.Cluster on an informer cache. Until the informers
// have synced it knows nothing (rules give no verdict); after that, reads are
// in-memory and never block.
type View struct {
	reader      client.Reader
	nodes, pods cache.Informer
}

var _ policy.Cluster = (*View)(nil)

// NewView registers the Node and Pod informers with c (they start with the
// cache) and returns the view on them.
func NewView(ctx context.Context, c cache.Cache) (*View, error) {
	nodes, err := c.GetInformer(ctx, &corev1.Node{}, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	pods, err := c.GetInformer(ctx, &corev1.Pod{}, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	return &View{reader: c, nodes: nodes, pods: pods}, nil
}

// Node implements policy.Cluster.
func (v *View) Node(name string) (*corev1.Node, bool) {
	if !v.nodes.HasSynced() {
		return nil, false
	}
	node := &corev1.Node{}
	// The informer has synced, so the cache answers from memory and never
	// waits on the context. The node is a shallow copy: read-only.
	if err := v.reader.Get(context.Background(), client.ObjectKey{Name: name}, node, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false
	}
	return node, true
}

// APIServerPods implements policy.Cluster. The pods are the cache's own
// objects: read-only.
func (v *View) APIServerPods() ([]*corev1.Pod, bool) {
	if !v.pods.HasSynced() {
		return nil, false
	}
	list := &corev1.PodList{}
	if err := v.reader.List(context.Background(), list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false
	}
	pods := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[i] = &list.Items[i]
	}
	return pods, true
}

// NamespaceLabels returns the labels of namespace (the policies' exclude
// label) from r, a cache; a namespace that is gone, or the cluster scope
// (""), has none. The labels are the cache's: callers must not modify them.
func NamespaceLabels(ctx context.Context, r client.Reader, namespace string) (map[string]string, error) {
	if namespace == "" {
		return nil, nil
	}
	ns := &corev1.Namespace{}
	if err := r.Get(ctx, client.ObjectKey{Name: namespace}, ns, client.UnsafeDisableDeepCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return ns.Labels, nil
}
