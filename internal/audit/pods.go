package audit

// The audit's hostNetwork pods: read page by page, then watched, each
// evaluated as it arrives and then dropped. Only each pod's name and
// resourceVersion stay in memory (and its verdicts, in state): a cache of
// 15,000 hostNetwork pods was 80% of the leader's heap at 5,000 nodes
// (docs/performance.md, bench-scale).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// hostNetworkPods selects the pods the policies read (see CacheOptions).
var hostNetworkPods = fields.OneTermEqualSelector("spec.hostNetwork", "true").String()

// podFeed lists and watches the hostNetwork pods and hands each change to
// the audit's queue through an inbox that holds a pod only until it is
// audited. A sweep lists them again, a page at a time, and waits for each
// page to be audited before it reads the next: memory stays bounded by the
// page size, not by the number of pods.
type podFeed struct {
	pods     podSource
	pageSize int64
	// skip, when set, says that a change of the pod can be dropped unseen
	// (Audit.skipPod): it is neither decoded nor audited.
	skip func(context.Context, types.NamespacedName) bool

	mu    sync.Mutex
	inbox map[types.NamespacedName]*corev1.Pod // nil: deleted
	// known is the resourceVersion of every pod that exists, as last
	// listed or watched.
	known map[types.NamespacedName]string
	taken chan struct{} // signalled when the inbox shrinks
}

func newPodFeed(pods podSource, pageSize int64) *podFeed {
	return &podFeed{
		pods:     pods,
		pageSize: pageSize,
		inbox:    map[types.NamespacedName]*corev1.Pod{},
		known:    map[types.NamespacedName]string{},
		taken:    make(chan struct{}, 1),
	}
}

// inboxState is what take found for a pod.
type inboxState int

const (
	// absent: no change of the pod is waiting (a re-audit asked for it).
	absent inboxState = iota
	// arrived: the pod, as last listed or watched.
	arrived
	// gone: the pod was deleted.
	gone
)

// take returns, and removes, what waits in the inbox for name.
func (f *podFeed) take(name types.NamespacedName) (*corev1.Pod, inboxState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.inbox[name]
	if !ok {
		return nil, absent
	}
	delete(f.inbox, name)
	select {
	case f.taken <- struct{}{}:
	default:
	}
	if p == nil {
		return nil, gone
	}
	return p, arrived
}

// putBack returns p to the inbox after its audit failed, unless a newer
// change of it arrived meanwhile.
func (f *podFeed) putBack(p *corev1.Pod) {
	name := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, newer := f.inbox[name]; !newer && f.known[name] == p.ResourceVersion {
		f.inbox[name] = p
	}
}

// arrive puts p in the inbox and records its resourceVersion; with
// onlyKnown (a sweep while the watch runs), only if it is the version the
// watch last delivered: the watch is the authority on every other.
func (f *podFeed) arrive(p *corev1.Pod, onlyKnown bool) bool {
	name := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	f.mu.Lock()
	defer f.mu.Unlock()
	if onlyKnown {
		if rv, ok := f.known[name]; !ok || rv != p.ResourceVersion {
			return false
		}
		if _, waiting := f.inbox[name]; waiting {
			return false
		}
	}
	f.known[name] = p.ResourceVersion
	f.inbox[name] = p
	return true
}

// depart records that the pod name was deleted.
func (f *podFeed) depart(name types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.known, name)
	f.inbox[name] = nil
}

// note records the resourceVersion of a pod that is not audited (skip); ""
// records that it was deleted.
func (f *podFeed) note(name types.NamespacedName, resourceVersion string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if resourceVersion == "" {
		delete(f.known, name)
	} else {
		f.known[name] = resourceVersion
	}
}

// waitBelow waits until at most n pods wait in the inbox.
func (f *podFeed) waitBelow(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		waiting := len(f.inbox)
		f.mu.Unlock()
		if waiting <= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.taken:
		}
	}
}

// Len returns the number of pods the feed knows of.
func (f *podFeed) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.known)
}

// sweep lists every hostNetwork pod, a page at a time, and hands each to
// enqueue; with full (no watch runs), pods it no longer lists are deleted.
// It returns the resourceVersion to watch from.
func (f *podFeed) sweep(ctx context.Context, full bool, enqueue func(types.NamespacedName)) (string, error) {
	var seen map[types.NamespacedName]bool // what a full sweep found, to find what is gone
	if full {
		seen = map[types.NamespacedName]bool{}
	}
	opts := metav1.ListOptions{FieldSelector: hostNetworkPods, Limit: f.pageSize}
	for {
		list, err := f.pods.list(ctx, opts)
		if err != nil {
			return "", fmt.Errorf("listing hostNetwork pods: %w", err)
		}
		for i := range list.Items {
			// A copy of the struct only, so that the page's array can go
			// while the pod waits to be audited.
			p := new(corev1.Pod)
			*p = list.Items[i]
			name := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
			if full {
				seen[name] = true
			}
			_, _ = slim(p)
			if f.arrive(p, !full) {
				enqueue(name)
			}
		}
		if full && list.Continue == "" {
			f.mu.Lock()
			var deleted []types.NamespacedName
			for name := range f.known {
				if !seen[name] {
					deleted = append(deleted, name)
				}
			}
			f.mu.Unlock()
			for _, name := range deleted {
				f.depart(name)
				enqueue(name)
			}
		}
		if err := f.waitBelow(ctx, int(f.pageSize)); err != nil {
			return "", err
		}
		if list.Continue == "" {
			return list.ResourceVersion, nil
		}
		opts.Continue = list.Continue
	}
}

// errExpired ends a watch whose resourceVersion is too old: a full sweep
// follows.
var errExpired = errors.New("watch expired")

// watch hands every change from resourceVersion on to enqueue, until ctx
// ends or the watch cannot go on (errExpired). A watch the API server ends
// is followed by the next, from the last resourceVersion seen.
func (f *podFeed) watch(ctx context.Context, resourceVersion string, enqueue func(types.NamespacedName)) error {
	log := logf.FromContext(ctx).WithName(Name)
	backoff := watchBackoff()
	for ctx.Err() == nil {
		start := time.Now()
		s, err := f.pods.watch(ctx, resourceVersion)
		events := 0
		if err == nil {
			resourceVersion, events, err = f.follow(ctx, s, resourceVersion, enqueue)
			_ = s.Close()
		}
		if events > 0 {
			backoff = watchBackoff()
		}
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errExpired), apierrors.IsResourceExpired(err), apierrors.IsGone(err):
			return fmt.Errorf("%w: %w", errExpired, err)
		case errors.Is(err, io.EOF) && (events > 0 || time.Since(start) > time.Second):
			// The API server ended the watch (its timeout): the next one.
		case errors.Is(err, io.EOF):
			// Ended at once: not in a hot loop.
			log.V(1).Info("The API server ended the watch of the hostNetwork pods at once; watching again")
			sleep(ctx, backoff.Step())
		default:
			log.Info("Watching the hostNetwork pods again", "reason", err.Error())
			sleep(ctx, backoff.Step())
		}
	}
	return ctx.Err()
}

func watchBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Steps: 6, Cap: 30 * time.Second}
}

// follow hands on the events of s until it ends, and returns the last
// resourceVersion seen and how many events it read.
func (f *podFeed) follow(ctx context.Context, s podStream, resourceVersion string, enqueue func(types.NamespacedName)) (string, int, error) {
	for events := 0; ; events++ {
		ev, err := s.next()
		if err != nil {
			return resourceVersion, events, err
		}
		switch ev.Type {
		case watch.Error:
			return resourceVersion, events, fmt.Errorf("%w: %w", errExpired, apierrors.FromObject(ev.Status))
		case watch.Added, watch.Modified:
			if err := f.changed(ctx, &ev, enqueue); err != nil {
				return resourceVersion, events, err
			}
		case watch.Deleted:
			name := types.NamespacedName{Namespace: ev.Namespace, Name: ev.Name}
			if f.skip != nil && f.skip(ctx, name) {
				f.note(name, "")
			} else {
				f.depart(name)
				enqueue(name)
			}
		}
		resourceVersion = ev.ResourceVersion
	}
}

// changed hands on a pod that was created or changed, decoded, unless skip
// drops it.
func (f *podFeed) changed(ctx context.Context, ev *podEvent, enqueue func(types.NamespacedName)) error {
	name := types.NamespacedName{Namespace: ev.Namespace, Name: ev.Name}
	if f.skip != nil && f.skip(ctx, name) {
		f.note(name, ev.ResourceVersion)
		return nil
	}
	p, err := ev.decodePod()
	if err != nil {
		return err
	}
	_, _ = slim(p)
	f.arrive(p, false)
	enqueue(name)
	return nil
}

// run sweeps, then watches; again after the watch expires. started is
// called with every pod of the first sweep before it is enqueued, and
// swept once the first sweep is done. A signal on resweep lists every pod
// again (the audit interval, a configuration reload).
func (f *podFeed) run(ctx context.Context, enqueue func(types.NamespacedName), started func(types.NamespacedName),
	swept func(), resweep <-chan struct{}) {
	log := logf.FromContext(ctx).WithName(Name)
	backoff := watchBackoff()
	first := true
	watching := make(chan struct{})
	go f.resweeps(ctx, watching, resweep, enqueue)
	for ctx.Err() == nil {
		add := enqueue
		if first {
			add = func(name types.NamespacedName) { started(name); enqueue(name) }
		}
		rv, err := f.sweep(ctx, true, add)
		if err != nil {
			if ctx.Err() == nil {
				log.Error(err, "Listing the hostNetwork pods; retrying")
				sleep(ctx, backoff.Step())
			}
			continue
		}
		backoff = watchBackoff()
		if first {
			first = false
			swept()
			close(watching)
		}
		if err := f.watch(ctx, rv, enqueue); err != nil && ctx.Err() == nil {
			log.V(1).Info("Watching the hostNetwork pods again after a full list", "reason", err.Error())
		}
	}
}

// resweeps sweeps the pods again on each signal from resweep, once the
// first sweep is done (watching closed), while the watch runs.
func (f *podFeed) resweeps(ctx context.Context, watching <-chan struct{}, resweep <-chan struct{}, enqueue func(types.NamespacedName)) {
	select {
	case <-ctx.Done():
		return
	case <-watching:
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-resweep:
			if _, err := f.sweep(ctx, false, enqueue); err != nil && ctx.Err() == nil {
				logf.FromContext(ctx).WithName(Name).Error(err, "Auditing the hostNetwork pods again")
			}
		}
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
