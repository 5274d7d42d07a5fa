package cluster

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
)

// NewLeaseInformer returns an informer on the node agents' Leases in
// namespace, the release namespace. It is not part of the manager's cache on
// purpose: the manager starts nothing until every informer of its cache has
// synced, and Leases that cannot be listed (RBAC from an older chart) must
// cost host-network-endpoint its rewrites (no node is verified), not stop
// the kube-proxy controller, the audit and the other policies. Run it with
// InformerRunnable.
//
// It stores each Lease as a *ParsedLease: its report parsed once, the Lease
// itself (its results annotation, a JSON array of every check, most of its
// size) dropped.
func NewLeaseInformer(clients kubernetes.Interface, namespace string) toolscache.SharedIndexInformer {
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.LabelSelector = hostnetwork.AgentLeaseSelector().String()
			return clients.CoordinationV1().Leases(namespace).List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = hostnetwork.AgentLeaseSelector().String()
			return clients.CoordinationV1().Leases(namespace).Watch(ctx, opts)
		},
	}
	inf := toolscache.NewSharedIndexInformer(lw, &coordinationv1.Lease{}, 0, toolscache.Indexers{})
	_ = inf.SetTransform(parseLeases)
	return inf
}

// parseLeases is the Lease informer's transform: a Lease becomes its
// ParsedLease before it is stored or handed to the handlers.
func parseLeases(obj any) (any, error) {
	if l, ok := obj.(*coordinationv1.Lease); ok {
		return ParseLease(l), nil
	}
	return obj, nil // already parsed: a transform may see an object twice
}

// ParsedLease is a node agent's Lease as the Lease informer keeps it: the
// metadata the informer needs (name, namespace, resourceVersion), and the
// report, parsed once, or why it could not be. At 5,000 nodes the Leases as
// they come were 6 MB of a follower's 50 MB heap (docs/performance.md,
// "The leader's cost").
type ParsedLease struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	Report  hostnetwork.Report
	Expires time.Time
	Err     error
}

var _ runtime.Object = (*ParsedLease)(nil)

// ParseLease reads l's report (hostnetwork.ReportOf) and keeps only its
// identity beside it: not its labels either, which the informer's selector
// has read (a Lease that stops matching it is deleted from the informer).
func ParseLease(l *coordinationv1.Lease) *ParsedLease {
	r, expires, err := hostnetwork.ReportOf(l)
	return &ParsedLease{
		TypeMeta: l.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: l.Name, Namespace: l.Namespace, UID: l.UID, ResourceVersion: l.ResourceVersion,
			DeletionTimestamp: l.DeletionTimestamp,
		},
		Report: r, Expires: expires, Err: err,
	}
}

// DeepCopyObject implements runtime.Object. The report is shared: nothing
// changes it once parsed.
func (p *ParsedLease) DeepCopyObject() runtime.Object {
	c := *p
	meta := &p.ObjectMeta
	meta.DeepCopyInto(&c.ObjectMeta)
	return &c
}
