package audit

// The ConfigMaps the policies read, cached one by one and shared with
// admission: AuditedConfigMaps, and the configuration's endpointConfigMaps
// (where CNIs keep the API endpoint), which references resolve to.

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ConfigMaps are the caches of the ConfigMaps the policies read, one per
// ConfigMap (a Role with resourceNames lets the server list one by name
// only). They run on every replica: admission resolves references from
// them (policy.ConfigMaps), the leader's audit audits them.
type ConfigMaps struct {
	caches map[types.NamespacedName]*configMapCache
	// endpoint are endpointConfigMaps: references resolve to these only.
	endpoint map[types.NamespacedName]bool
}

var _ policy.ConfigMaps = (*ConfigMaps)(nil)

// NewConfigMaps returns the caches of AuditedConfigMaps and of endpoint,
// added to mgr. The list is read once: changing it takes a restart.
func NewConfigMaps(mgr manager.Manager, endpoint []types.NamespacedName) (*ConfigMaps, error) {
	c := &ConfigMaps{caches: map[types.NamespacedName]*configMapCache{}, endpoint: map[types.NamespacedName]bool{}}
	for _, nn := range endpoint {
		c.endpoint[nn] = true
	}
	for _, nn := range append(append([]types.NamespacedName{}, AuditedConfigMaps...), endpoint...) {
		if c.caches[nn] != nil {
			continue
		}
		cm, err := newConfigMapCache(mgr, nn)
		if err != nil {
			return nil, fmt.Errorf("%s cache of ConfigMap %s: %w", Name, nn, err)
		}
		c.caches[nn] = cm
	}
	return c, nil
}

// ConfigMap implements policy.ConfigMaps, from memory: Unknown until the
// ConfigMap's cache has synced (RBAC may never let it).
func (c *ConfigMaps) ConfigMap(namespace, name string) (*corev1.ConfigMap, policy.Knowledge) {
	nn := types.NamespacedName{Namespace: namespace, Name: name}
	if !c.endpoint[nn] {
		return nil, policy.NotListed
	}
	cc := c.caches[nn]
	if !cc.synced.Load() {
		return nil, policy.Unknown
	}
	cm := &corev1.ConfigMap{}
	// A synced informer's Get reads its store: no API call, no wait.
	switch err := cc.Get(context.Background(), nn, cm); {
	case apierrors.IsNotFound(err):
		return nil, policy.Absent
	case err != nil:
		return nil, policy.Unknown
	}
	return cm, policy.Known
}

// Listed implements policy.ConfigMaps.
func (c *ConfigMaps) Listed(namespace, name string) bool {
	return c.endpoint[types.NamespacedName{Namespace: namespace, Name: name}]
}

// isEndpoint reports whether nn is one of endpointConfigMaps, whose change
// changes the verdicts on the pods and workloads that read it.
func (c *ConfigMaps) isEndpoint(nn types.NamespacedName) bool { return c.endpoint[nn] }

// configMapKeys are the keys of the ConfigMaps the audit reads.
func (a *Audit) configMapKeys() []Key {
	keys := make([]Key, 0, len(a.configMaps))
	for nn := range a.configMaps {
		keys = append(keys, Key{Kind: kinds.ConfigMap.GVK.Kind, NamespacedName: nn})
	}
	return keys
}

// askRecheck asks for every object to be audited again, once the initial
// audit has begun (it waits for the ConfigMaps' caches, so their first
// sync is in it): a change of an endpoint ConfigMap changes the verdicts
// on the pods and workloads that read it, which the audit does not index.
// Such changes are rare (a CNI's install or upgrade); several coalesce.
func (a *Audit) askRecheck() {
	select {
	case <-a.seeded:
	default:
		return
	}
	select {
	case a.recheck <- struct{}{}:
	default:
	}
}

// rechecking is enqueue, and for each event a recheck (askRecheck): the
// handler of an endpoint ConfigMap, whose change changes the verdicts on
// the pods and workloads that read it.
func (a *Audit) rechecking(enqueue handler.TypedEventHandler[client.Object, Key]) handler.TypedEventHandler[client.Object, Key] {
	return handler.TypedFuncs[client.Object, Key]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[Key]) {
			enqueue.Create(ctx, e, q)
			a.askRecheck()
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[Key]) {
			enqueue.Update(ctx, e, q)
			a.askRecheck()
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[Key]) {
			enqueue.Delete(ctx, e, q)
			a.askRecheck()
		},
	}
}
