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
	"sigs.k8s.io/controller-runtime/pkg/manager"

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
