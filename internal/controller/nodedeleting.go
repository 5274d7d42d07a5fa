// Package controller holds the policy engine's controller front-end: the
// kube-proxy-node-deleting controller, which follows Nodes and applies the
// policy to the kube-proxy pods bound to them. Like the admission front-end
// it holds no rule logic: the engine decides, the controller writes.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/endpoint-policy/endpoint-policy/internal/announce"
	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

const (
	// NodeDeletingName names the controller (logs, controller-runtime's
	// controller_runtime_reconcile_* metrics).
	NodeDeletingName = "kube-proxy-node-deleting"

	// ReasonNodeDeleting is the reason of the Event recorded on a kube-proxy
	// pod when it is annotated (or, in Audit, would have been).
	ReasonNodeDeleting = "NodeDeleting"
	// ReasonNodeDeletingCancelled is the reason of the Event recorded when
	// the annotations are removed because the node is no longer being
	// deleted.
	ReasonNodeDeletingCancelled = "NodeDeletingCancelled"

	// concurrentReconciles: each reconcile is one node, mostly waiting on one
	// PATCH; 500 nodes tainted at once are annotated in parallel (see
	// BenchmarkNodeDeleting500Nodes in test/integration).
	concurrentReconciles = 8
)

// NodeDeleting is the kube-proxy-node-deleting controller. It reconciles
// one Node at a time: every selected kube-proxy pod bound to it gets what the
// policy says (annotations set in Enforce; an Event and a metric in Audit;
// stale annotations removed in both).
type NodeDeleting struct {
	engine  *policy.Store         // the engine in force
	cluster policy.Cluster        // nodes, from the manager's cache
	cache   client.Reader         // the manager's cache: every node on reloads, namespaces' labels
	pods    *cluster.SelectedPods // kube-proxy pods, by node
	client  client.Client         // writes go to the API server
	events  events.EventRecorder
	metrics *metrics.Recorder

	mu sync.Mutex
	// annotated is, per node, the pods that carry the annotation and its
	// reason: the per-pod gauge's series; total, their number, is the
	// count gauge.
	annotated map[string]map[types.NamespacedName]string
	total     int
	// announced is, per node, the pods whose Audit Event was recorded and
	// for which reason, so that an Audit Event is recorded once, not at
	// every reconcile.
	announced announce.Set[string, types.UID, string]
}

// NodeDeletingOptions are what the controller needs.
type NodeDeletingOptions struct {
	Engine  *policy.Store
	Cluster policy.Cluster
	Pods    *cluster.SelectedPods
	Events  events.EventRecorder
	Metrics *metrics.Recorder
}

// SetupNodeDeleting creates the controller and adds it to mgr
// (leader-elected, as every controller).
func SetupNodeDeleting(mgr ctrl.Manager, o NodeDeletingOptions) error {
	if o.Engine == nil || o.Cluster == nil || o.Pods == nil || o.Events == nil || o.Metrics == nil {
		return fmt.Errorf("%s controller: engine, cluster, pods, events and metrics are all required", NodeDeletingName)
	}
	r := &NodeDeleting{
		engine:    o.Engine,
		cluster:   o.Cluster,
		cache:     mgr.GetCache(),
		pods:      o.Pods,
		client:    mgr.GetClient(),
		events:    o.Events,
		metrics:   o.Metrics,
		annotated: map[string]map[types.NamespacedName]string{},
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named(NodeDeletingName).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrentReconciles}).
		WatchesRawSource(source.Kind[client.Object](mgr.GetCache(), &corev1.Node{}, &handler.EnqueueRequestForObject{}, nodeChanges())).
		WatchesRawSource(source.Func(r.enqueueAllOnReload))
	for _, src := range o.Pods.Sources(handler.EnqueueRequestsFromMapFunc(podNode), podChanges()) {
		b = b.WatchesRawSource(src)
	}
	return b.Complete(r)
}

// nodeChanges lets through the node events that can change what the policy
// says: a node that is being deleted appears (start, or created tainted),
// its deletion state changes, or it is gone (its pods are recounted).
func nodeChanges() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return len(deletions(e.Object)) > 0 },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !equalDeletions(deletions(e.ObjectOld), deletions(e.ObjectNew))
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func deletions(obj client.Object) []kubeproxy.Deletion {
	if node, ok := obj.(*corev1.Node); ok {
		return kubeproxy.Deletions(node)
	}
	return nil
}

func equalDeletions(a, b []kubeproxy.Deletion) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Reason != b[i].Reason || !a[i].Since.Equal(b[i].Since) {
			return false
		}
	}
	return true
}

// podChanges lets through the pod events that can change what the policy
// says about a pod: it appears bound (start, static pods), gets bound
// (DaemonSet pods are bound by the scheduler after creation), its
// annotations change (someone removed ours), or it is gone (recount).
func podChanges() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return nodeName(e.Object) != "" },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if nodeName(e.ObjectNew) == "" {
				return false
			}
			oldA, newA := e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()
			return nodeName(e.ObjectOld) != nodeName(e.ObjectNew) ||
				oldA[kubeproxy.NodeDeletingAnnotation] != newA[kubeproxy.NodeDeletingAnnotation] ||
				oldA[kubeproxy.NodeDeletingSinceAnnotation] != newA[kubeproxy.NodeDeletingSinceAnnotation]
		},
		DeleteFunc:  func(e event.DeleteEvent) bool { return nodeName(e.Object) != "" },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func nodeName(obj client.Object) string {
	if pod, ok := obj.(*cluster.KubeProxyPod); ok {
		return pod.NodeName
	}
	return ""
}

func podNode(_ context.Context, obj client.Object) []reconcile.Request {
	if n := nodeName(obj); n != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: n}}}
	}
	return nil
}

// enqueueAllOnReload reconciles every node after each configuration reload:
// a mode change (Audit to Enforce) applies to nodes already being deleted.
func (r *NodeDeleting) enqueueAllOnReload(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	go func() {
		changed := r.engine.Changed()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			// Re-arm before listing, so that a swap during the listing is
			// not missed.
			changed = r.engine.Changed()
			nodes := &corev1.NodeList{}
			if err := r.cache.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
				logf.FromContext(ctx).Error(err, "Cannot list nodes after a configuration reload")
				continue
			}
			for i := range nodes.Items {
				q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: nodes.Items[i].Name}})
			}
		}
	}()
	return nil
}

// Reconcile implements reconcile.Reconciler for one node.
func (r *NodeDeleting) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	node := req.Name
	pods, err := r.pods.OnNode(ctx, node)
	if err != nil {
		return reconcile.Result{}, err
	}
	engine := r.engine.Load()
	annotated := map[types.NamespacedName]string{}
	announced := map[types.UID]string{}
	var errs []error
	for _, pod := range pods {
		// annotated counts what the pods carry after this reconcile: what
		// they carry now, changed by the patches that succeed.
		key := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
		reason, has := pod.Annotations[kubeproxy.NodeDeletingAnnotation]
		if has {
			annotated[key] = reason
		}
		nsLabels, err := cluster.NamespaceLabels(ctx, r.cache, pod.Namespace)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		target := policy.Target{Object: pod, NamespaceLabels: nsLabels, Cluster: r.cluster}
		res, ok := engine.EvaluatePolicy(target, kubeproxy.NodeDeletingID)
		if !ok || len(res.Findings) == 0 {
			continue
		}
		f := res.Findings[0]
		note := fmt.Sprintf("[%s] %s", kubeproxy.NodeDeletingID, f.Message)
		switch {
		case len(f.RemoveAnnotations) > 0:
			// Undone in Audit too: a stale annotation would hide a real
			// kube-proxy failure from health checks.
			if err := r.patch(ctx, pod, nil, f.RemoveAnnotations); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(annotated, key)
			r.metrics.NodeDeletingAnnotation(metrics.AnnotationRemove)
			r.event(pod, node, ReasonNodeDeletingCancelled, "RemoveAnnotations", note)
		case res.Exemption != nil:
			// Exempted: left as it is; the audit reports it as skipped.
			continue
		case res.Mode == policy.Enforce:
			if err := r.patch(ctx, pod, f.Annotations, nil); err != nil {
				errs = append(errs, err)
				continue
			}
			annotated[key] = f.Annotations[kubeproxy.NodeDeletingAnnotation]
			r.metrics.NodeDeletingAnnotation(metrics.AnnotationAdd)
			r.event(pod, node, ReasonNodeDeleting, "Annotate", note)
		default: // Audit: say what would have been annotated, once.
			reason := f.Annotations[kubeproxy.NodeDeletingAnnotation]
			announced[pod.UID] = reason
			if r.wasAnnounced(node, pod.UID, reason) {
				continue
			}
			r.metrics.NodeDeletingAnnotation(metrics.AnnotationWarn)
			r.event(pod, node, ReasonNodeDeleting, "Audit", fmt.Sprintf("[%s] %s", kubeproxy.NodeDeletingID, f.Text(policy.Would)))
		}
	}
	r.record(node, annotated, announced)
	return reconcile.Result{}, errors.Join(errs...)
}

// patch sets and removes annotations with a JSON merge patch of the pod's
// metadata: never an update of the whole object, so no other field is
// written and no write of anyone else is lost. Without a resourceVersion the
// patch cannot conflict with other writers; the uid makes it fail when the
// name now belongs to another pod, and a failed patch is retried with
// backoff on the next reconcile, which re-reads the cache. A pod that is
// gone needs nothing.
func (r *NodeDeleting) patch(ctx context.Context, pod *corev1.Pod, set map[string]string, remove []string) error {
	annotations := make(map[string]any, len(set)+len(remove))
	for k, v := range set {
		annotations[k] = v
	}
	for _, k := range remove {
		annotations[k] = nil
	}
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID, "annotations": annotations}})
	if err != nil {
		return err
	}
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name}}
	if err := r.client.Patch(ctx, target, client.RawPatch(types.MergePatchType, data)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patching pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// event records a Normal Event on pod, related to its node. The note is at
// most a few hundred bytes (the policy's message names one node), under the
// 1 kB limit of events.k8s.io.
func (r *NodeDeleting) event(pod *corev1.Pod, node, reason, action, note string) {
	regarding := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}}
	regarding.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	related := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	related.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	r.events.Eventf(regarding, related, corev1.EventTypeNormal, reason, action, "%s", note)
}

// wasAnnounced reports whether the Audit Event for uid and reason was
// recorded at an earlier reconcile of node.
func (r *NodeDeleting) wasAnnounced(node string, uid types.UID, reason string) bool {
	return r.announced.Has(node, uid, reason)
}

// record publishes what node's kube-proxy pods carry after a reconcile:
// annotated (pod to reason) becomes the per-pod gauge's series for node
// (series for pods no longer annotated are deleted) and the count gauge's
// share of node; announced are its Audit Events.
func (r *NodeDeleting) record(node string, annotated map[types.NamespacedName]string, announced map[types.UID]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.annotated[node]
	for pod, reason := range before {
		if now, ok := annotated[pod]; !ok || now != reason {
			r.metrics.NodeDeletingPod(pod.Namespace, pod.Name, node, reason, false)
		}
	}
	for pod, reason := range annotated {
		r.metrics.NodeDeletingPod(pod.Namespace, pod.Name, node, reason, true)
	}
	r.total += len(annotated) - len(before)
	if len(annotated) == 0 {
		delete(r.annotated, node)
	} else {
		r.annotated[node] = annotated
	}
	r.announced.Replace(node, announced)
	r.metrics.NodeDeletingPods(r.total)
}
