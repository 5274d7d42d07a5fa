package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// NodeNameField is the index of SelectedPods: a pod's spec.nodeName.
const NodeNameField = "spec.nodeName"

// SelectedPods caches the pods that a set of label selectors select (the
// kube-proxy pods) and nothing else: one informer per selector, each listing
// and watching only its selector's pods, so that 20,000 other pods in the
// cluster cost nothing. The pods are indexed by spec.nodeName and slimmed to
// their metadata and node name.
//
// The caches run with the leader-elected controllers that use them.
type SelectedPods struct {
	caches []cache.Cache
}

// NewSelectedPods creates one cache per selector and adds them to mgr.
func NewSelectedPods(ctx context.Context, mgr manager.Manager, selectors []labels.Selector) (*SelectedPods, error) {
	if len(selectors) == 0 {
		return nil, fmt.Errorf("selected pods: no selector")
	}
	s := &SelectedPods{}
	for _, sel := range selectors {
		c, err := cache.New(mgr.GetConfig(), cache.Options{
			HTTPClient: mgr.GetHTTPClient(),
			Scheme:     mgr.GetScheme(),
			Mapper:     mgr.GetRESTMapper(),
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}: {Label: sel, Transform: slimPod},
			},
			// Reads of any other kind are a programming error, not a reason
			// to start watching it.
			ReaderFailOnMissingInformer: true,
		})
		if err != nil {
			return nil, fmt.Errorf("pod cache for %q: %w", sel, err)
		}
		if err := c.IndexField(ctx, &corev1.Pod{}, NodeNameField, indexNodeName); err != nil {
			return nil, fmt.Errorf("pod cache for %q: %w", sel, err)
		}
		if err := mgr.Add(c); err != nil {
			return nil, fmt.Errorf("pod cache for %q: %w", sel, err)
		}
		s.caches = append(s.caches, c)
	}
	return s, nil
}

func indexNodeName(obj client.Object) []string {
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" {
		return []string{pod.Spec.NodeName}
	}
	return nil
}

// slimPod keeps what the kube-proxy controller reads: metadata (without
// managed fields), spec.nodeName and status.phase.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{TypeMeta: pod.TypeMeta, ObjectMeta: pod.ObjectMeta}
	slim.ManagedFields = nil
	slim.Spec.NodeName = pod.Spec.NodeName
	slim.Status.Phase = pod.Status.Phase
	return slim, nil
}

// OnNode returns the selected pods bound to node, each once. The pods are the
// caches' own objects: read-only.
func (s *SelectedPods) OnNode(ctx context.Context, node string) ([]*corev1.Pod, error) {
	var pods []*corev1.Pod
	seen := map[types.UID]bool{}
	for _, c := range s.caches {
		list := &corev1.PodList{}
		if err := c.List(ctx, list, client.MatchingFields{NodeNameField: node}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing pods on node %s: %w", node, err)
		}
		for i := range list.Items {
			if p := &list.Items[i]; !seen[p.UID] {
				seen[p.UID] = true
				pods = append(pods, p)
			}
		}
	}
	return pods, nil
}

// Sources returns one watch source per cache, for a controller.
func (s *SelectedPods) Sources(h handler.EventHandler, predicates ...predicate.Predicate) []source.Source {
	out := make([]source.Source, 0, len(s.caches))
	for _, c := range s.caches {
		out = append(out, source.Kind[client.Object](c, &corev1.Pod{}, h, predicates...))
	}
	return out
}
