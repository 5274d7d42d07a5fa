package audit

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// syncCache is a cache that syncs when told to.
type syncCache struct {
	cache.Cache
	synced bool
}

func (c *syncCache) WaitForCacheSync(context.Context) bool { return c.synced }

func (c *syncCache) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	obj.(*corev1.ConfigMap).Data = map[string]string{"k": "v"}
	return nil
}

// A ConfigMap whose cache cannot sync (no Role to list it) reads as absent,
// and its source is not one the controller waits for: the audit, and the
// leader, go on without it. Once it syncs, it is read.
func TestConfigMapCacheNeverBlocks(t *testing.T) {
	fake := &syncCache{}
	c := &configMapCache{Cache: fake}
	nn := types.NamespacedName{Namespace: "kube-public", Name: "cluster-info"}
	cm := &corev1.ConfigMap{}
	if err := c.reader().Get(t.Context(), nn, cm); !apierrors.IsNotFound(err) {
		t.Fatalf("before sync: %v, want not found", err)
	}
	if err := c.reader().List(t.Context(), &corev1.ConfigMapList{}); err != nil {
		t.Fatalf("before sync, List: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // a cache that never syncs: waitForSync returns with the context
	c.waitForSync(ctx, nn)
	if c.synced.Load() {
		t.Fatal("marked synced without syncing")
	}
	fake.synced = true
	c.waitForSync(t.Context(), nn)
	if err := c.reader().Get(t.Context(), nn, cm); err != nil || cm.Data["k"] != "v" {
		t.Fatalf("after sync: %v, %v", err, cm.Data)
	}

	var src source.TypedSource[Key] = nonBlocking{source.TypedKind[client.Object, Key](fake, &corev1.ConfigMap{}, nil)}
	if _, ok := src.(source.TypedSyncingSource[Key]); ok {
		t.Error("the ConfigMap source is one the controller waits for")
	}
}
