// Package audit is the background-audit front-end of the policy engine: it
// evaluates the policies against the objects already in the cluster (on
// start, on every change, and every audit.interval) and publishes what it
// finds as a gauge (endpoint_policy_violations), Events (reason
// PolicyViolation, once per violation) and PolicyReports
// (wgpolicyk8s.io/v1alpha2, one per namespace, when the CRD is installed).
// It also finds the hostNetwork pods that a fail-open admission let through
// without the host-network-endpoint rewrite. It holds no rule logic.
package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/apiserver"
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
}

// Audit is the background audit. It runs only on the leader.
type Audit struct {
	engine     *policy.Store
	cluster    policy.Cluster
	namespaces client.Reader
	events     events.EventRecorder
	cache      cache.Cache
	scheme     *runtime.Scheme
	skip       map[policy.ID]bool
	settings   atomic.Pointer[config.Audit]
	state      *state
	reports    *reportWriter

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
	announcedMu sync.Mutex
	announced   map[types.UID]map[string]bool
	seeded      chan struct{} // closed once announced and pending are loaded
}

// audited are the kinds the audit reads: the pods and workloads, and the
// kubeadm-config ConfigMap, by kind name (Key.Kind).
var audited = func() map[string]kinds.Kind {
	m := map[string]kinds.Kind{}
	for _, k := range append(append([]kinds.Kind{}, kinds.Workloads...), kinds.ConfigMap) {
		m[k.GVK.Kind] = k
	}
	return m
}()

// CacheOptions restricts the audit's own cache to what the policies read:
// hostNetwork pods only (the policies' pods are all hostNetwork: kube-apiserver
// and kube-vip static pods, kube-proxy; and those the host-network-endpoint
// rewrite is for), workloads without status or managed fields, and the one
// kubeadm-config ConfigMap. Pods on the pod network are never listed: 20,000
// of them cost nothing.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.hostNetwork", "true"), Transform: slim},
			// Listed in kube-system by name: a Role with resourceNames
			// [kubeadm-config] in kube-system is all the RBAC it takes.
			&corev1.ConfigMap{}: {
				Namespaces: map[string]cache.Config{apiserver.KubeadmConfigNamespace: {}},
				Field:      fields.OneTermEqualSelector("metadata.name", apiserver.KubeadmConfigName),
				Transform:  slim,
			},
			&appsv1.Deployment{}:  {Transform: slim},
			&appsv1.StatefulSet{}: {Transform: slim},
			&appsv1.DaemonSet{}:   {Transform: slim},
			&appsv1.ReplicaSet{}:  {Transform: slim},
			&batchv1.Job{}:        {Transform: slim},
			&batchv1.CronJob{}:    {Transform: slim},
		},
		ReaderFailOnMissingInformer: true,
	}
}

// lastApplied is kubectl's copy of the whole object: no policy reads it.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// slim drops what no policy reads: managed fields, kubectl's copy of the
// object, status (kept for pods: a finished pod is not an API server), and
// the pod template of a ReplicaSet or Job that a Deployment or CronJob owns
// (the owner is audited, see ownedTemplate).
func slim(obj any) (any, error) {
	o, ok := obj.(client.Object)
	if !ok {
		return obj, nil
	}
	o.SetManagedFields(nil)
	if a := o.GetAnnotations(); a[lastApplied] != "" {
		delete(a, lastApplied)
		o.SetAnnotations(a)
	}
	switch w := o.(type) {
	case *corev1.Pod:
		w.Status = corev1.PodStatus{Phase: w.Status.Phase}
	case *appsv1.Deployment:
		w.Status = appsv1.DeploymentStatus{}
	case *appsv1.StatefulSet:
		w.Status = appsv1.StatefulSetStatus{}
	case *appsv1.DaemonSet:
		w.Status = appsv1.DaemonSetStatus{}
	case *appsv1.ReplicaSet:
		w.Status = appsv1.ReplicaSetStatus{}
		if ownedTemplate(w) {
			w.Spec.Template = corev1.PodTemplateSpec{}
		}
	case *batchv1.Job:
		w.Status = batchv1.JobStatus{}
		if ownedTemplate(w) {
			w.Spec.Template = corev1.PodTemplateSpec{}
		}
	case *batchv1.CronJob:
		w.Status = batchv1.CronJobStatus{}
	}
	return obj, nil
}

// ownedTemplate reports a ReplicaSet owned by a Deployment or a Job owned by
// a CronJob: its template is its owner's, which the audit reports; its pods
// are audited as pods.
func ownedTemplate(obj client.Object) bool {
	ref := metav1.GetControllerOf(obj)
	if ref == nil {
		return false
	}
	switch obj.(type) {
	case *appsv1.ReplicaSet:
		return ref.Kind == "Deployment" && strings.HasPrefix(ref.APIVersion, "apps/")
	case *batchv1.Job:
		return ref.Kind == "CronJob" && strings.HasPrefix(ref.APIVersion, "batch/")
	}
	return false
}

// New creates the audit, its cache and its controller, and adds them to mgr
// (leader-elected).
func New(ctx context.Context, mgr manager.Manager, o Options) (*Audit, error) {
	if o.Engine == nil || o.Cluster == nil || o.Namespaces == nil || o.Events == nil || o.Metrics == nil || o.ReportingController == "" {
		return nil, fmt.Errorf("%s: engine, cluster, namespaces, events, reporting controller and metrics are all required", Name)
	}
	opts := CacheOptions()
	opts.HTTPClient, opts.Scheme, opts.Mapper = mgr.GetHTTPClient(), mgr.GetScheme(), mgr.GetRESTMapper()
	c, err := cache.New(mgr.GetConfig(), opts)
	if err != nil {
		return nil, fmt.Errorf("%s cache: %w", Name, err)
	}
	if err := mgr.Add(c); err != nil {
		return nil, fmt.Errorf("%s cache: %w", Name, err)
	}
	a := &Audit{
		engine:     o.Engine,
		cluster:    o.Cluster,
		namespaces: o.Namespaces,
		events:     o.Events,
		cache:      c,
		scheme:     mgr.GetScheme(),
		skip:       map[policy.ID]bool{},
		state:      newState(o.Metrics),
		pending:    map[Key]bool{},
		initial:    make(chan struct{}),
		apiReader:  mgr.GetAPIReader(),
		seeded:     make(chan struct{}),

		reportingController: o.ReportingController,
	}
	for _, id := range o.Skip {
		a.skip[id] = true
	}
	a.SetSettings(o.Settings)
	a.reports = &reportWriter{client: mgr.GetClient(), mapper: mgr.GetRESTMapper(), state: a.state, audit: a}
	if err := mgr.Add(a.reports); err != nil {
		return nil, fmt.Errorf("%s reports: %w", Name, err)
	}

	ctrl, err := controller.NewTyped[Key](Name, mgr, controller.TypedOptions[Key]{
		Reconciler:              a,
		MaxConcurrentReconciles: 2,
	})
	if err != nil {
		return nil, err
	}
	for kindName, k := range audited {
		src := source.TypedKind[client.Object, Key](c, k.New(), handler.TypedEnqueueRequestsFromMapFunc(
			func(_ context.Context, obj client.Object) []Key {
				return []Key{{Kind: kindName, NamespacedName: client.ObjectKeyFromObject(obj)}}
			}))
		if err := ctrl.Watch(src); err != nil {
			return nil, fmt.Errorf("%s: watching %s: %w", Name, k, err)
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
		return nil, fmt.Errorf("%s: watching kube-apiserver pods: %w", Name, err)
	}
	onNode := handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, node client.Object) []Key {
		return a.apiServerKeys(ctx, mgrCache, node.GetName())
	})
	if err := ctrl.Watch(source.TypedKind[client.Object, Key](mgrCache, &corev1.Node{}, onNode, addressesChanged())); err != nil {
		return nil, fmt.Errorf("%s: watching nodes: %w", Name, err)
	}
	if err := ctrl.Watch(source.TypedFunc[Key](a.enqueueAll)); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return a, nil
}

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

// addressesChanged lets through new and deleted Nodes and changes of a
// Node's addresses, not its heartbeats.
func addressesChanged() predicate.TypedPredicate[client.Object] {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// SetSettings changes the audit's settings (a configuration reload).
func (a *Audit) SetSettings(s config.Audit) { a.settings.Store(&s) }

// Settings returns the settings in force.
func (a *Audit) Settings() config.Audit { return *a.settings.Load() }

// enqueueAll audits every object: once the cache has synced (the initial
// audit, whose end reconciles the existing reports), then every interval and
// after every configuration reload (a mode change changes every verdict).
func (a *Audit) enqueueAll(ctx context.Context, q workqueue.TypedRateLimitingInterface[Key]) error {
	go func() {
		log := logf.FromContext(ctx).WithName(Name)
		if !a.cache.WaitForCacheSync(ctx) {
			return
		}
		a.loadAnnounced(ctx)
		keys := a.keys(ctx)
		a.pendingMu.Lock()
		for _, k := range keys {
			a.pending[k] = true
		}
		a.pendingMu.Unlock()
		// Reconciles wait until here: the Events of an earlier leader are
		// known, and so is the end of the initial audit.
		close(a.seeded)
		for _, k := range keys {
			q.Add(k)
		}
		a.done(Key{}) // nothing to audit at all
		log.Info("Auditing the objects in the cluster", "objects", len(keys))
		for {
			changed := a.engine.Changed()
			timer := time.NewTimer(a.Settings().Interval.Duration)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-changed:
				timer.Stop()
			case <-timer.C:
			}
			for _, k := range a.keys(ctx) {
				q.Add(k)
			}
		}
	}()
	return nil
}

// keys lists every object in the audit's cache.
func (a *Audit) keys(ctx context.Context) []Key {
	var keys []Key
	for kindName, k := range audited {
		obj, err := a.scheme.New(k.GVK.GroupVersion().WithKind(kindName + "List"))
		list, ok := obj.(client.ObjectList)
		if err != nil || !ok {
			logf.FromContext(ctx).Error(err, "No list type", "kind", k.String())
			continue
		}
		if err := a.cache.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			logf.FromContext(ctx).Error(err, "Listing the cache", "kind", k.String())
			continue
		}
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			if item, ok := o.(client.Object); ok {
				keys = append(keys, Key{Kind: kindName, NamespacedName: client.ObjectKeyFromObject(item)})
			}
			return nil
		})
	}
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
		a.announcedMu.Lock()
		a.announced = nil // what is still in it is no longer true
		a.announcedMu.Unlock()
	}
}

// Synced is closed once every object found at start has been audited.
func (a *Audit) Synced() <-chan struct{} { return a.initial }

// loadAnnounced reads the audit Events that an earlier leader recorded and
// that are still there (Events expire after an hour by default), page by
// page, so that a restart or a new leader does not announce every violation
// again.
func (a *Audit) loadAnnounced(ctx context.Context) {
	announced := map[types.UID]map[string]bool{}
	list := &corev1.EventList{}
	opts := []client.ListOption{client.MatchingFields{"reason": policy.EventReason}, client.Limit(500)}
	for {
		if err := a.apiReader.List(ctx, list, opts...); err != nil {
			// Not fatal: the violations are announced again.
			logf.FromContext(ctx).WithName(Name).Error(err, "Listing the audit Events of an earlier leader")
			return
		}
		for _, e := range list.Items {
			if e.Action != EventAction || e.ReportingController != a.reportingController {
				continue
			}
			uid := e.InvolvedObject.UID
			if announced[uid] == nil {
				announced[uid] = map[string]bool{}
			}
			announced[uid][e.Message] = true
		}
		if list.Continue == "" {
			break
		}
		opts = append(opts[:2], client.Continue(list.Continue))
	}
	a.announcedMu.Lock()
	a.announced = announced
	a.announcedMu.Unlock()
}

// wasAnnounced reports, once, whether an earlier leader announced note on
// the object uid.
func (a *Audit) wasAnnounced(uid types.UID, note string) bool {
	a.announcedMu.Lock()
	defer a.announcedMu.Unlock()
	if !a.announced[uid][note] {
		return false
	}
	delete(a.announced[uid], note)
	return true
}

// Reconcile implements reconcile.TypedReconciler: it audits one object.
func (a *Audit) Reconcile(ctx context.Context, k Key) (reconcile.Result, error) {
	select {
	case <-ctx.Done():
		return reconcile.Result{}, ctx.Err()
	case <-a.seeded:
	}
	// An object that fails is retried, but does not hold up the end of the
	// initial audit.
	defer a.done(k)
	kind, ok := audited[k.Kind]
	if !ok {
		return reconcile.Result{}, nil
	}
	obj := kind.New()
	err := a.cache.Get(ctx, k.NamespacedName, obj)
	switch {
	case apierrors.IsNotFound(err):
		a.state.set(k, nil, nil, 0)
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	if ownedTemplate(obj) {
		a.state.set(k, nil, nil, 0)
		return reconcile.Result{}, nil
	}

	nsLabels, err := cluster.NamespaceLabels(ctx, a.namespaces, k.Namespace)
	if err != nil {
		return reconcile.Result{}, err
	}
	results := a.engine.Load().Evaluate(policy.Target{Object: obj, NamespaceLabels: nsLabels, Cluster: a.cluster})
	var violations []violation
	passes := 0
	now := time.Now()
	for _, r := range policy.Verdicts(obj, results) {
		if a.skip[r.Policy] {
			continue
		}
		action := r.Action
		if action == policy.ActionAllow {
			passes++
			continue
		}
		violations = append(violations, violation{
			Policy:  r.Policy,
			Mode:    r.Mode,
			Action:  action,
			Message: policy.Shorten(strings.Join(r.Messages(policy.Would, maxMessagesPerResult), "; "), policy.MaxNoteBytes),
			Since:   now,
		})
	}
	ref := objectRef{APIVersion: kind.GVK.GroupVersion().String(), Kind: kind.GVK.Kind, Namespace: obj.GetNamespace(),
		Name: obj.GetName(), UID: obj.GetUID()}
	for _, v := range a.state.set(k, &ref, violations, passes) {
		if !a.wasAnnounced(obj.GetUID(), v.Message) {
			a.events.Eventf(obj, nil, corev1.EventTypeWarning, policy.EventReason, EventAction, "%s", v.Message)
		}
	}
	return reconcile.Result{}, nil
}

// violation is one policy's verdict on one object, when it is not allow.
type violation struct {
	Policy  policy.ID
	Mode    policy.Mode
	Action  policy.Action
	Message string
	// Since is when the audit first saw this violation.
	Since time.Time
}

// same reports whether v and o are the same violation with the same verdict.
func (v violation) same(o violation) bool {
	return v.sameFinding(o) && v.Action == o.Action && v.Mode == o.Mode
}

// sameFinding reports whether v and o are the same finding of the same
// policy, whatever the verdict.
func (v violation) sameFinding(o violation) bool {
	return v.Policy == o.Policy && v.Message == o.Message
}

// objectRef is an audited object, as a report names it.
type objectRef struct {
	APIVersion, Kind, Namespace, Name string
	UID                               types.UID
}

type entry struct {
	ref        objectRef
	violations []violation
	passes     int
}

type countKey struct {
	policy          policy.ID
	namespace, kind string
}

// state is what the audit currently knows: each object's violations, the
// counts behind the gauge, and the namespaces whose report is out of date.
type state struct {
	metrics *metrics.Recorder

	mu          sync.Mutex
	byNamespace map[string]map[Key]*entry
	counts      map[countKey]int
	dirty       map[string]bool
	retries     map[string]bool // reports that failed to write
	wake        chan struct{}   // signalled when dirty gains a namespace
}

func newState(m *metrics.Recorder) *state {
	return &state{
		metrics:     m,
		byNamespace: map[string]map[Key]*entry{},
		counts:      map[countKey]int{},
		dirty:       map[string]bool{},
		retries:     map[string]bool{},
		wake:        make(chan struct{}, 1),
	}
}

// set replaces k's violations and passes (ref nil: k is gone or not audited)
// and returns the violations that are new, which deserve an Event. A
// violation seen before keeps the time it was first seen.
func (s *state) set(k Key, ref *objectRef, violations []violation, passes int) (added []violation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := s.byNamespace[k.Namespace]
	old := ns[k]
	var before, known []violation
	if old != nil {
		before = old.violations
		if ref != nil && ref.UID == old.ref.UID {
			known = before // not a new object under the same name
		}
	}
	for i, v := range violations {
		// The same finding in another mode (a configuration reload) is the
		// same violation: it keeps its time and is not announced again.
		if j := slices.IndexFunc(known, v.sameFinding); j >= 0 {
			violations[i].Since = known[j].Since
		} else {
			added = append(added, v)
		}
	}
	changed := old == nil && (len(violations) > 0 || passes > 0) ||
		old != nil && (ref == nil || *ref != old.ref || old.passes != passes || !slices.EqualFunc(before, violations, violation.same))
	if !changed {
		return nil
	}
	for _, v := range before {
		s.count(countKey{v.Policy, k.Namespace, k.Kind}, -1)
	}
	for _, v := range violations {
		s.count(countKey{v.Policy, k.Namespace, k.Kind}, +1)
	}
	if ref == nil || (len(violations) == 0 && passes == 0) {
		delete(ns, k)
		if len(ns) == 0 {
			delete(s.byNamespace, k.Namespace)
		}
	} else {
		if ns == nil {
			ns = map[Key]*entry{}
			s.byNamespace[k.Namespace] = ns
		}
		ns[k] = &entry{ref: *ref, violations: violations, passes: passes}
	}
	s.dirty[k.Namespace] = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return added
}

func (s *state) count(c countKey, delta int) {
	s.counts[c] += delta
	n := s.counts[c]
	if n == 0 {
		delete(s.counts, c)
	}
	s.metrics.Violations(c.policy, c.namespace, c.kind, n)
}

// takeDirty returns, and forgets, the namespaces whose report is out of
// date, with a copy of their entries.
func (s *state) takeDirty() map[string][]entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]entry, len(s.dirty))
	for ns := range s.dirty {
		entries := make([]entry, 0, len(s.byNamespace[ns]))
		for _, e := range s.byNamespace[ns] {
			entries = append(entries, *e)
		}
		out[ns] = entries
	}
	s.dirty = map[string]bool{}
	return out
}

// retry marks namespace's report to be written again at the next
// markRetries (the next interval), or with the next change to it.
func (s *state) retry(namespace string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retries[namespace] = true
}

// markRetries marks the reports that failed to write.
func (s *state) markRetries() {
	s.mu.Lock()
	namespaces := make([]string, 0, len(s.retries))
	for ns := range s.retries {
		namespaces = append(namespaces, ns)
	}
	s.retries = map[string]bool{}
	s.mu.Unlock()
	s.markDirty(namespaces...)
}

// markAllDirty marks every namespace with violations.
func (s *state) markAllDirty() {
	s.mu.Lock()
	namespaces := make([]string, 0, len(s.byNamespace))
	for ns := range s.byNamespace {
		namespaces = append(namespaces, ns)
	}
	s.mu.Unlock()
	s.markDirty(namespaces...)
}

// markDirty marks namespaces whose report must be reconciled.
func (s *state) markDirty(namespaces ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ns := range namespaces {
		s.dirty[ns] = true
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
