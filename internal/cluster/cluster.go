// Package cluster is the admission front-end's view of cluster state: the
// manager's informer cache, restricted to what the policies need (Nodes, and
// kube-apiserver pods by label, never every pod in the cluster), read without
// API calls and without waiting.
package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// CacheOptions restricts the manager's cache to what the policies read:
// only kube-apiserver pods (component=kube-apiserver), Nodes without the
// parts no policy reads (container image lists, managed fields), which are
// most of a Node's size, and Namespaces' metadata (the exclude label). The
// node agents' Leases have their own informer (NewLeaseInformer).
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

// InformerRunnable runs Informer as a manager.Runnable: on every replica
// (the node agents' Leases), or only on the leader with LeaderElected (the
// kube-proxy pods, for the controller that reads them).
type InformerRunnable struct {
	Informer      toolscache.SharedIndexInformer
	LeaderElected bool
}

// Start implements manager.Runnable.
func (r InformerRunnable) Start(ctx context.Context) error {
	r.Informer.RunWithContext(ctx)
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (r InformerRunnable) NeedLeaderElection() bool { return r.LeaderElected }

// ProtobufConfig returns a copy of cfg whose clients speak protobuf: a third
// of the CPU of JSON to decode (docs/performance.md). For the pods, which
// the policies read in thousands.
func ProtobufConfig(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return c
}

func stripNamespace(obj any) (any, error) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		ns.ManagedFields = nil
		ns.Spec = corev1.NamespaceSpec{}
		ns.Status = corev1.NamespaceStatus{}
	}
	return obj, nil
}

// stripNode keeps what the policies read of a Node: its name, labels and
// deletion timestamp (the scheduling match of host-network-endpoint's
// verification, kube-proxy-node-deleting), its taints, and its addresses
// (apiserver-advertise-address). The rest (annotations, conditions,
// capacity, node info, images) is most of a Node's size, and 5,000 of them
// are most of a replica's memory (docs/performance.md, bench-scale).
func stripNode(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		n.ManagedFields = nil
		n.Annotations = nil
		n.OwnerReferences = nil
		n.Spec = corev1.NodeSpec{Taints: n.Spec.Taints, Unschedulable: n.Spec.Unschedulable}
		n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
	}
	return obj, nil
}

// View implements policy.Cluster on an informer cache, and
// hostnetwork.Verifications on its Nodes and the node agents' Leases. Until
// the informers have synced it knows nothing (rules give no verdict); after
// that, reads are in-memory and never block.
type View struct {
	*Endpoints
	reader      client.Reader
	nodes, pods cache.Informer
}

var (
	_ policy.Cluster            = (*View)(nil)
	_ hostnetwork.Verifications = (*View)(nil)
	_ cpendpoint.LabelledNodes  = (*View)(nil)
)

// NewView registers the Node and Pod informers with c (they start with the
// cache; CacheOptions restricts them) and returns the view on them and on
// leases (NewLeaseInformer), which the caller runs. Leases that carry no
// readable report are logged to log and ignored.
func NewView(ctx context.Context, c cache.Cache, leases toolscache.SharedIndexInformer, log logr.Logger) (*View, error) {
	nodes, err := c.GetInformer(ctx, &corev1.Node{}, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	pods, err := c.GetInformer(ctx, &corev1.Pod{}, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	v := &View{reader: c, nodes: nodes, pods: pods}
	var nodesFed, leasesFed toolscache.ResourceEventHandlerRegistration
	v.Endpoints = NewEndpoints(time.Now, func() bool { return nodesFed.HasSynced() && leasesFed.HasSynced() })
	if nodesFed, err = nodes.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { v.setNode(obj) },
		UpdateFunc: func(_, obj any) { v.setNode(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := tombstoned[*corev1.Node](obj); ok {
				v.DeleteNode(n.Name)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	setLease := func(obj any) {
		if l, ok := obj.(*ParsedLease); ok {
			if err := v.SetReport(l.Name, l.Report, l.Expires, l.Err); err != nil {
				log.Error(err, "Ignoring a node agent Lease")
			}
		}
	}
	if leasesFed, err = leases.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    setLease,
		UpdateFunc: func(_, obj any) { setLease(obj) },
		DeleteFunc: func(obj any) {
			if l, ok := tombstoned[*ParsedLease](obj); ok {
				v.DeleteLease(l.Name)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("lease informer: %w", err)
	}
	return v, nil
}

func (v *View) setNode(obj any) {
	if n, ok := obj.(*corev1.Node); ok {
		v.SetNode(n)
	}
}

// tombstoned returns the object of a delete notification, which may come as
// a tombstone when the informer missed the deletion.
func tombstoned[T any](obj any) (T, bool) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, ok := obj.(T)
	return o, ok
}

// Refresher returns a manager.Runnable that calls Refresh every interval,
// once the view has synced, and passes the counts of nodes by status to
// report. It runs on every replica (each admits pods): no leader election.
func (v *View) Refresher(interval time.Duration, report func(map[hostnetwork.Status]int)) Refresher {
	return Refresher{v: v, interval: interval, report: report}
}

// Refresher keeps a view's groups current (View.Refresher).
type Refresher struct {
	v        *View
	interval time.Duration
	report   func(map[hostnetwork.Status]int)
}

// Start implements manager.Runnable.
func (r Refresher) Start(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if r.v.VerificationsSynced() {
			r.report(r.v.Refresh())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: false.
func (Refresher) NeedLeaderElection() bool { return false }

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

// NodesLabelled implements cpendpoint.LabelledNodes, from the cache
// (read-only).
func (v *View) NodesLabelled(key string) ([]*corev1.Node, bool) {
	if !v.nodes.HasSynced() {
		return nil, false
	}
	list := &corev1.NodeList{}
	if err := v.reader.List(context.Background(), list, client.HasLabels{key}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, false
	}
	nodes := make([]*corev1.Node, len(list.Items))
	for i := range list.Items {
		nodes[i] = &list.Items[i]
	}
	return nodes, true
}

// NamespaceStore returns a reader of namespaces' labels that looks them up
// in the store of r's Namespace informer when r is a cache (a map lookup:
// the cache's Get resolves the object's kind through the scheme first: 13%
// of the single replica's CPU in BenchmarkEndToEnd when the audit's pod feed
// asked it for every event), or NamespaceLabels on r otherwise. A namespace
// the store does not hold has none.
func NamespaceStore(ctx context.Context, r client.Reader) (func(namespace string) (map[string]string, error), error) {
	c, ok := r.(cache.Cache)
	if !ok {
		return func(namespace string) (map[string]string, error) { return NamespaceLabels(ctx, r, namespace) }, nil
	}
	inf, err := c.GetInformer(ctx, &corev1.Namespace{}, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("namespace informer: %w", err)
	}
	sii, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return func(namespace string) (map[string]string, error) { return NamespaceLabels(ctx, r, namespace) }, nil
	}
	store := sii.GetStore()
	return func(namespace string) (map[string]string, error) {
		obj, ok, err := store.GetByKey(namespace)
		if err != nil || !ok {
			return nil, err
		}
		if ns, isNS := obj.(*corev1.Namespace); isNS {
			return ns.Labels, nil
		}
		return nil, nil
	}, nil
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
