// Package audit is the background-audit front-end of the policy engine: it
// evaluates the policies against the objects already in the cluster (on
// start, on every change, and every audit.interval) and publishes what it
// finds as a gauge (endpoint_policy_violations), Events (reason
// PolicyViolation, once per violation; for the pods of a workload, once per
// workload and policy per interval, owners.go) and PolicyReports
// (wgpolicyk8s.io/v1alpha2, one per namespace, when the CRD is installed).
// It also finds the hostNetwork pods that a fail-open admission let through
// without the host-network-endpoint rewrite. It holds no rule logic.
package audit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/endpoint-policy/endpoint-policy/internal/announce"
	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
)

const (
	// Name is the audit controller's name (in logs and controller metrics).
	Name = "audit"

	// EventAction is the action of the audit's Events.
	EventAction = "Audit"
	// maxMessagesPerResult caps the findings rendered into one message.
	maxMessagesPerResult = 10
)

// Key names one audited object.
type Key struct {
	Kind string // kinds.Kind GVK.Kind
	types.NamespacedName
}

// Options are what the audit needs.
type Options struct {
	// Engine is the engine in force.
	Engine *policy.Store
	// Cluster is the admission path's view (Nodes, kube-apiserver pods).
	Cluster policy.Cluster
	// Namespaces reads Namespaces (for the exclude label); the manager's
	// cache.
	Namespaces client.Reader
	// Events records the PolicyViolation Events.
	Events events.EventRecorder
	// Metrics exports the violations gauge.
	Metrics *metrics.Recorder
	// Settings are the audit settings in force at start; SetSettings
	// changes them on a configuration reload.
	Settings config.Audit
	// ReportingController is the Events' reporting controller (the event
	// recorder's name), to recognise an earlier leader's Events.
	ReportingController string
	// Skip are policies the audit does not report, because a controller
	// keeps them true continuously (kube-proxy-node-deleting).
	Skip []policy.ID
	// ConfigMaps are the caches of the ConfigMaps the policies read
	// (NewConfigMaps), shared with admission; nil: the audit's own, of
	// AuditedConfigMaps only.
	ConfigMaps *ConfigMaps
}

// Audit is the background audit. It runs only on the leader.
type Audit struct {
	engine     *policy.Store
	cluster    policy.Cluster
	namespaces client.Reader
	events     events.EventRecorder
	cache      cache.Cache
	// configMaps cache each of AuditedConfigMaps and endpointConfigMaps.
	configMaps map[types.NamespacedName]*configMapCache
	endpoint   *ConfigMaps
	// recheck asks for every object to be audited again: an endpoint
	// ConfigMap changed, which changes the verdicts on what reads it.
	recheck  chan struct{}
	scheme   *runtime.Scheme
	skip     map[policy.ID]bool
	settings atomic.Pointer[config.Audit]
	state    *state
	reports  *reportWriter
	// pods are the hostNetwork pods, not cached (pods.go); apiServers is
	// the manager's cache of kube-apiserver pods, for their re-audits.
	pods    *podFeed
	resweep chan struct{}
	// namespaceLabels reads a namespace's labels from the Namespaces' store
	// (cluster.NamespaceStore), for the pod feed's every event.
	namespaceLabels func(namespace string) (map[string]string, error)
	apiServers      client.Reader

	// pending are the objects found at start not yet audited; initial is
	// closed when none is left, so that reports are reconciled with what
	// exists only once the audit has seen everything.
	pendingMu sync.Mutex
	pending   map[Key]bool
	initial   chan struct{}

	// apiReader reads what the caches do not hold (the Events of an
	// earlier leader).
	apiReader           client.Reader
	reportingController string
	// announced are the notes of the audit Events already on each object
	// when this process started auditing (an earlier leader's): those
	// violations are not announced again. Emptied by the initial audit.
	announced announce.Set[types.UID, string, bool]
	// announcedOwners are the workloads and policies an earlier leader's
	// Events announced (owners.go); emptied by the initial audit too.
	announcedOwners announce.Set[types.UID, policy.ID, bool]
	owners          *ownerEvents
	seeded          chan struct{} // closed once announced and pending are loaded
	exemptionState  exemptionWatch
}

// New creates the audit, its cache and its controller, and adds them to mgr
// (leader-elected).
func New(ctx context.Context, mgr manager.Manager, o Options) (*Audit, error) {
	if o.Engine == nil || o.Cluster == nil || o.Namespaces == nil || o.Events == nil || o.Metrics == nil || o.ReportingController == "" {
		return nil, fmt.Errorf("%s: engine, cluster, namespaces, events, reporting controller and metrics are all required", Name)
	}
	c, err := newCache(mgr)
	if err != nil {
		return nil, err
	}
	if o.ConfigMaps == nil {
		if o.ConfigMaps, err = NewConfigMaps(mgr, nil); err != nil {
			return nil, err
		}
	}
	pods, err := newAPIPods(mgr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	a := &Audit{
		engine:     o.Engine,
		cluster:    o.Cluster,
		namespaces: o.Namespaces,
		events:     o.Events,
		cache:      c,
		configMaps: o.ConfigMaps.caches,
		endpoint:   o.ConfigMaps,
		recheck:    make(chan struct{}, 1),
		scheme:     mgr.GetScheme(),
		skip:       map[policy.ID]bool{},
		state:      newState(o.Metrics),
		pending:    map[Key]bool{},
		initial:    make(chan struct{}),
		apiReader:  mgr.GetAPIReader(),
		seeded:     make(chan struct{}),
		pods:       newPodFeed(pods, podPageSize),
		resweep:    make(chan struct{}, 1),
		apiServers: mgr.GetCache(),

		reportingController: o.ReportingController,
	}
	if a.namespaceLabels, err = cluster.NamespaceStore(ctx, o.Namespaces); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	a.pods.skip = a.skipPod
	for _, id := range o.Skip {
		a.skip[id] = true
	}
	a.SetSettings(o.Settings)
	a.owners = a.newOwnerEvents()
	a.reports = &reportWriter{client: mgr.GetClient(), mapper: mgr.GetRESTMapper(), state: a.state, initial: a.initial, settings: a.Settings}
	if err := mgr.Add(a.reports); err != nil {
		return nil, fmt.Errorf("%s reports: %w", Name, err)
	}

	if err := a.watch(mgr); err != nil {
		return nil, err
	}
	return a, nil
}

// newOwnerEvents returns the Events per workload (owners.go), recorded by
// a's recorder at most once per audit interval.
func (a *Audit) newOwnerEvents() *ownerEvents {
	return &ownerEvents{
		settle:   ownerSettle,
		interval: func() time.Duration { return a.Settings().Interval.Duration },
		record: func(regarding, related *corev1.ObjectReference, note string) {
			var rel runtime.Object // not a typed nil
			if related != nil {
				rel = related
			}
			a.events.Eventf(regarding, rel, corev1.EventTypeWarning, policy.EventReason, EventAction, "%s", note)
		},
	}
}

// newCache returns the audit's own cache, of the audited kinds but pods
// and ConfigMaps (NewConfigMaps), added to mgr.
func newCache(mgr manager.Manager) (cache.Cache, error) {
	opts := CacheOptions()
	opts.HTTPClient, opts.Scheme, opts.Mapper = mgr.GetHTTPClient(), mgr.GetScheme(), mgr.GetRESTMapper()
	c, err := cache.New(mgr.GetConfig(), opts)
	if err != nil {
		return nil, fmt.Errorf("%s cache: %w", Name, err)
	}
	if err := mgr.Add(c); err != nil {
		return nil, fmt.Errorf("%s cache: %w", Name, err)
	}
	return c, nil
}

// newConfigMapCache returns the cache of the ConfigMap nn, added to mgr
// with a runnable that says when it synced (or cannot).
func newConfigMapCache(mgr manager.Manager, nn types.NamespacedName) (*configMapCache, error) {
	opts := ConfigMapCacheOptions(nn)
	opts.HTTPClient, opts.Scheme, opts.Mapper = mgr.GetHTTPClient(), mgr.GetScheme(), mgr.GetRESTMapper()
	cm, err := cache.New(mgr.GetConfig(), opts)
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(cm); err != nil {
		return nil, err
	}
	c := &configMapCache{Cache: cm}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		c.waitForSync(ctx, nn)
		return nil
	})); err != nil {
		return nil, err
	}
	return c, nil
}

// watch creates the audit's controller and its watches: each audited kind
// (pods come from the pod feed, see enqueueAll), each audited ConfigMap, and
// what other verdicts depend on.
func (a *Audit) watch(mgr manager.Manager) error {
	ctrl, err := controller.NewTyped[Key](Name, mgr, controller.TypedOptions[Key]{
		Reconciler:              a,
		MaxConcurrentReconciles: 2,
	})
	if err != nil {
		return err
	}
	for kindName, k := range audited {
		if err := a.watchKind(ctrl, kindName, k); err != nil {
			return err
		}
	}
	// Verdicts on a kube-apiserver pod depend on the other kube-apiservers
	// and on its Node's addresses (apiserver-advertise-address): a change to
	// any of them audits the kube-apiserver pods again. They are few.
	mgrCache := mgr.GetCache()
	allAPIServers := handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []Key {
		return a.apiServerKeys(ctx, mgrCache, "")
	})
	if err := ctrl.Watch(source.TypedKind[client.Object, Key](mgrCache, &corev1.Pod{}, allAPIServers)); err != nil {
		return fmt.Errorf("%s: watching kube-apiserver pods: %w", Name, err)
	}
	// The policies' ConfigMaps too (control-plane-endpoint): a node that
	// joins or leaves the control plane can change their verdicts.
	onNode := handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, node client.Object) []Key {
		return append(a.apiServerKeys(ctx, mgrCache, node.GetName()), a.configMapKeys()...)
	})
	if err := ctrl.Watch(source.TypedKind[client.Object, Key](mgrCache, &corev1.Node{}, onNode, addressesChanged())); err != nil {
		return fmt.Errorf("%s: watching nodes: %w", Name, err)
	}
	if err := ctrl.Watch(source.TypedFunc[Key](a.enqueueAll)); err != nil {
		return fmt.Errorf("%s: %w", Name, err)
	}
	return nil
}

// watchKind watches one audited kind: from the audit's cache, or for
// ConfigMaps from each one's cache (which never blocks: nonBlocking).
func (a *Audit) watchKind(ctrl controller.TypedController[Key], kindName string, k kinds.Kind) error {
	enqueue := handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []Key {
		return []Key{{Kind: kindName, NamespacedName: client.ObjectKeyFromObject(obj)}}
	})
	switch k.GVK {
	case kinds.Pod.GVK:
		return nil // the pod feed's, see enqueueAll
	case kinds.ConfigMap.GVK:
		for nn, cm := range a.configMaps {
			h := enqueue
			if a.endpoint.isEndpoint(nn) {
				h = a.rechecking(enqueue)
			}
			src := nonBlocking{source.TypedKind[client.Object, Key](cm.Cache, k.New(), h)}
			if err := ctrl.Watch(src); err != nil {
				return fmt.Errorf("%s: watching ConfigMap %s: %w", Name, nn, err)
			}
		}
		return nil
	}
	if err := ctrl.Watch(source.TypedKind[client.Object, Key](a.cache, k.New(), enqueue)); err != nil {
		return fmt.Errorf("%s: watching %s: %w", Name, k, err)
	}
	return nil
}

// podPageSize is how many pods a sweep reads at a time, and about how many
// wait in memory to be audited.
const podPageSize = 500

// apiServerKeys returns the kube-apiserver pods of the manager's cache
// (label-selected), those on node only unless node is "".
func (a *Audit) apiServerKeys(ctx context.Context, c client.Reader, node string) []Key {
	list := &corev1.PodList{}
	if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		logf.FromContext(ctx).Error(err, "Listing kube-apiserver pods")
		return nil
	}
	var keys []Key
	for i := range list.Items {
		p := &list.Items[i]
		if node == "" || p.Spec.NodeName == node {
			keys = append(keys, Key{Kind: kinds.Pod.GVK.Kind, NamespacedName: client.ObjectKeyFromObject(p)})
		}
	}
	return keys
}

// addressesChanged lets through new and deleted Nodes, changes of a Node's
// addresses and of its control-plane label, not its heartbeats.
func addressesChanged() predicate.TypedPredicate[client.Object] {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			if !ok1 || !ok2 {
				return true
			}
			_, wasCP := o.Labels[cpendpoint.ControlPlaneLabel]
			_, isCP := n.Labels[cpendpoint.ControlPlaneLabel]
			return wasCP != isCP || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// SetSettings changes the audit's settings (a configuration reload). A
// change to what the reports hold (maxReportResults, reportAPI) rewrites
// them now rather than at each namespace's next change.
func (a *Audit) SetSettings(s config.Audit) {
	old := a.settings.Swap(&s)
	if old != nil && (old.MaxReportResults != s.MaxReportResults || old.ReportAPI != s.ReportAPI) {
		a.state.markAllDirty()
	}
}

// Settings returns the settings in force.
func (a *Audit) Settings() config.Audit { return *a.settings.Load() }
