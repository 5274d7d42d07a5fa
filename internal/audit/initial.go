package audit

// The initial audit: every object found at start, queued once, and the
// signal that all of them have been audited.

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
)

// enqueueAll audits every object: once the cache has synced (the initial
// audit, whose end reconciles the existing reports), then every interval,
// after every configuration reload (a mode change changes every verdict) and
// when an exemption expires.
func (a *Audit) enqueueAll(ctx context.Context, q workqueue.TypedRateLimitingInterface[Key]) error {
	go func() {
		log := logf.FromContext(ctx).WithName(Name)
		if !a.cache.WaitForCacheSync(ctx) {
			return
		}
		// The ConfigMaps' caches, each for at most configMapSyncTimeout:
		// one that cannot sync is audited when it does (configMapCache).
		short, cancel := context.WithTimeout(ctx, configMapSyncTimeout)
		for _, c := range a.configMaps {
			if c.WaitForCacheSync(short) {
				c.synced.Store(true)
			}
		}
		cancel()
		a.loadAnnounced(ctx)
		keys := a.keys(ctx)
		a.pendingMu.Lock()
		for _, k := range keys {
			a.pending[k] = true
		}
		// The pods are pending from when the pod feed lists them until
		// each is audited; the initial audit cannot end before its first
		// sweep does.
		a.pending[firstSweep] = true
		a.pendingMu.Unlock()
		// Reconciles wait until here: the Events of an earlier leader are
		// known, and so is the end of the initial audit.
		close(a.seeded)
		for _, k := range keys {
			q.Add(k)
		}
		enqueuePod := func(name types.NamespacedName) { q.Add(Key{Kind: kinds.Pod.GVK.Kind, NamespacedName: name}) }
		addPending := func(name types.NamespacedName) {
			a.pendingMu.Lock()
			defer a.pendingMu.Unlock()
			if a.pending != nil {
				a.pending[Key{Kind: kinds.Pod.GVK.Kind, NamespacedName: name}] = true
			}
		}
		swept := func() {
			log.Info("Auditing the objects in the cluster", "objects", len(keys), "hostNetworkPods", a.pods.Len())
			a.done(firstSweep)
		}
		go a.pods.run(ctx, enqueuePod, addPending, swept, a.resweep)
		for a.next(ctx, log) {
			for _, k := range a.keys(ctx) {
				q.Add(k)
			}
			select {
			case a.resweep <- struct{}{}:
			default: // a sweep is already asked for
			}
		}
	}()
	return nil
}

// next waits for the next reason to audit everything again: the interval,
// a configuration reload, a recheck (an endpoint ConfigMap's change) or an
// exemption's expiry. It returns false when ctx ends.
func (a *Audit) next(ctx context.Context, log logr.Logger) bool {
	changed := a.engine.Changed()
	expiry, stopExpiry := a.exemptionsInForce(a.engine.Load())
	timer := time.NewTimer(a.Settings().Interval.Duration)
	defer timer.Stop()
	defer stopExpiry()
	select {
	case <-ctx.Done():
		return false
	case <-changed:
	case <-a.recheck:
	case <-timer.C:
		a.logUnmatched(log)
	case <-expiry:
		// What it covered is a violation again, without a reload.
		log.Info("An exemption expired: auditing again")
	}
	return true
}

// firstSweep is pending until the pod feed has listed every pod once.
var firstSweep = Key{Kind: "first sweep of the pods"}

// keys lists every object in the audit's cache (not the pods: the pod
// feed's).
func (a *Audit) keys(ctx context.Context) []Key {
	var keys []Key
	for kindName, k := range audited {
		if k.GVK == kinds.Pod.GVK {
			continue
		}
		obj, err := a.scheme.New(k.GVK.GroupVersion().WithKind(kindName + "List"))
		list, ok := obj.(client.ObjectList)
		if err != nil || !ok {
			logf.FromContext(ctx).Error(err, "No list type", "kind", k.String())
			continue
		}
		readers := []client.Reader{a.cache}
		if k.GVK == kinds.ConfigMap.GVK {
			readers = readers[:0]
			for _, c := range a.configMaps {
				readers = append(readers, c.reader())
			}
		}
		for _, r := range readers {
			if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
				logf.FromContext(ctx).Error(err, "Listing the cache", "kind", k.String())
				continue
			}
			keys = appendKeys(keys, kindName, list)
		}
	}
	return keys
}

// appendKeys adds the key of every object of list.
func appendKeys(keys []Key, kindName string, list client.ObjectList) []Key {
	_ = meta.EachListItem(list, func(o runtime.Object) error {
		if item, ok := o.(client.Object); ok {
			keys = append(keys, Key{Kind: kindName, NamespacedName: client.ObjectKeyFromObject(item)})
		}
		return nil
	})
	return keys
}

// done records that k was audited; the initial audit ends with the last of
// the objects found at start.
func (a *Audit) done(k Key) {
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	if a.pending == nil {
		return
	}
	delete(a.pending, k)
	if len(a.pending) == 0 {
		a.pending = nil
		close(a.initial)
		a.announced.Reset() // what is still in it is no longer true
		a.announcedOwners.Reset()
	}
}

// Synced is closed once every object found at start has been audited.
func (a *Audit) Synced() <-chan struct{} { return a.initial }
