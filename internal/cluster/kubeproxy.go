package cluster

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

// NodeNameField is the index of SelectedPods: a pod's spec.nodeName.
const NodeNameField = "spec.nodeName"

// SelectedPods keeps the pods that a set of label selectors select (the
// kube-proxy pods) and nothing else: one informer per selector, each listing
// and watching only its selector's pods, so that 20,000 other pods in the
// cluster cost nothing. Each pod is kept as a KubeProxyPod, indexed by its
// node.
//
// The informers run with the leader-elected controllers that use them.
type SelectedPods struct {
	informers []toolscache.SharedIndexInformer
}

// NewSelectedPods creates one informer per selector and adds them to mgr.
func NewSelectedPods(_ context.Context, mgr manager.Manager, selectors []labels.Selector) (*SelectedPods, error) {
	if len(selectors) == 0 {
		return nil, fmt.Errorf("selected pods: no selector")
	}
	pods, err := corev1client.NewForConfigAndClient(ProtobufConfig(mgr.GetConfig()), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("selected pods: %w", err)
	}
	s := &SelectedPods{}
	for _, sel := range selectors {
		selector := sel.String()
		lw := &toolscache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.LabelSelector = selector
				return pods.Pods(metav1.NamespaceAll).List(ctx, opts)
			},
			WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.LabelSelector = selector
				return pods.Pods(metav1.NamespaceAll).Watch(ctx, opts)
			},
		}
		inf := toolscache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, toolscache.Indexers{NodeNameField: indexNodeName})
		if err := inf.SetTransform(projectKubeProxyPod); err != nil {
			return nil, fmt.Errorf("pod informer for %q: %w", selector, err)
		}
		if err := mgr.Add(InformerRunnable{Informer: inf, LeaderElected: true}); err != nil {
			return nil, fmt.Errorf("pod informer for %q: %w", selector, err)
		}
		s.informers = append(s.informers, inf)
	}
	return s, nil
}

func indexNodeName(obj any) ([]string, error) {
	if pod, ok := obj.(*KubeProxyPod); ok && pod.NodeName != "" {
		return []string{pod.NodeName}, nil
	}
	return nil, nil
}

// KubeProxyPod is a kube-proxy pod as SelectedPods keeps it: what
// kube-proxy-node-deleting and the exemptions read (its identity, labels,
// controller, the node-deleting annotations), its node and its phase. A
// *corev1.Pod, even slimmed to its metadata, kept about 3.9 KB per node at
// 5,000 nodes, the largest part of the leader's heap (docs/performance.md,
// "The leader's cost"; BenchmarkKubeProxyPodStore).
type KubeProxyPod struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	NodeName string
	Phase    corev1.PodPhase
}

var _ client.Object = (*KubeProxyPod)(nil)

// projectKubeProxyPod is the informers' transform.
func projectKubeProxyPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // already projected: a transform may see an object twice
	}
	p := &KubeProxyPod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			Labels: pod.Labels, DeletionTimestamp: pod.DeletionTimestamp,
		},
		NodeName: pod.Spec.NodeName,
		Phase:    pod.Status.Phase,
	}
	for _, k := range []string{kubeproxy.NodeDeletingAnnotation, kubeproxy.NodeDeletingSinceAnnotation} {
		if v, ok := pod.Annotations[k]; ok {
			if p.Annotations == nil {
				p.Annotations = make(map[string]string, 2)
			}
			p.Annotations[k] = v
		}
	}
	if owner := metav1.GetControllerOfNoCopy(pod); owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	return p, nil
}

// Pod returns the pod as the policies read it: a new *corev1.Pod with what
// p keeps. Its labels, annotations and owner are p's: read-only.
func (p *KubeProxyPod) Pod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: p.ObjectMeta,
		Spec:       corev1.PodSpec{NodeName: p.NodeName},
		Status:     corev1.PodStatus{Phase: p.Phase},
	}
}

// DeepCopyObject implements runtime.Object.
func (p *KubeProxyPod) DeepCopyObject() runtime.Object {
	c := *p
	p.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// errNotSynced: the informers have not listed the pods yet.
var errNotSynced = errors.New("the kube-proxy pods are not listed yet")

// OnNode returns the selected pods bound to node, each once, as the
// policies read them (KubeProxyPod.Pod): read-only.
func (s *SelectedPods) OnNode(_ context.Context, node string) ([]*corev1.Pod, error) {
	var pods []*corev1.Pod
	seen := map[types.UID]bool{}
	for _, inf := range s.informers {
		if !inf.HasSynced() {
			return nil, errNotSynced
		}
		objs, err := inf.GetIndexer().ByIndex(NodeNameField, node)
		if err != nil {
			return nil, fmt.Errorf("listing pods on node %s: %w", node, err)
		}
		for _, obj := range objs {
			if p, ok := obj.(*KubeProxyPod); ok && !seen[p.UID] {
				seen[p.UID] = true
				pods = append(pods, p.Pod())
			}
		}
	}
	return pods, nil
}

// Sources returns one watch source per informer, for a controller: the
// objects its handler and predicates see are *KubeProxyPod. The controller
// starts once they have listed the pods.
func (s *SelectedPods) Sources(h handler.EventHandler, predicates ...predicate.Predicate) []source.Source {
	out := make([]source.Source, 0, len(s.informers))
	for _, inf := range s.informers {
		out = append(out, syncedInformer{&source.Informer{Informer: inf, Handler: h, Predicates: predicates}, inf})
	}
	return out
}

// syncedInformer is a source.Informer that the controller waits for
// (source.SyncingSource), as it waits for a cache's.
type syncedInformer struct {
	*source.Informer
	inf toolscache.SharedIndexInformer
}

// WaitForSync implements source.SyncingSource.
func (s syncedInformer) WaitForSync(ctx context.Context) error {
	if !toolscache.WaitForCacheSync(ctx.Done(), s.inf.HasSynced) {
		return fmt.Errorf("%w: %w", errNotSynced, ctx.Err())
	}
	return nil
}
