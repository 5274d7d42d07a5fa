package audit

// One Event per owning workload, not one per pod: in Audit mode every pod
// of a 5,000-node DaemonSet is a violation of the same finding.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// ownerSettle is how long the first Event about a workload waits for its
// other pods: a DaemonSet's pods arrive together.
const ownerSettle = 10 * time.Second

// podWorkload returns the workload that owns pod, as an Event names it: the
// Deployment of a ReplicaSet a Deployment owns, the CronJob of a Job a
// CronJob owns, else the controller itself when it is a workload (a
// DaemonSet, StatefulSet, ReplicaSet or Job). A pod without one (a static
// pod, whose controller is its Node; a bare pod) has nil.
func podWorkload(ctx context.Context, r client.Reader, pod *corev1.Pod) *corev1.ObjectReference {
	if pod == nil {
		return nil
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return nil
	}
	group, _, _ := strings.Cut(ref.APIVersion, "/")
	var owner client.Object
	switch {
	case group == appsv1.GroupName && ref.Kind == "ReplicaSet":
		owner = &appsv1.ReplicaSet{}
	case group == batchv1.GroupName && ref.Kind == "Job":
		owner = &batchv1.Job{}
	case group == appsv1.GroupName && (ref.Kind == "DaemonSet" || ref.Kind == "StatefulSet"):
	default:
		return nil
	}
	out := &corev1.ObjectReference{APIVersion: ref.APIVersion, Kind: ref.Kind, Namespace: pod.Namespace, Name: ref.Name, UID: ref.UID}
	if owner == nil || r.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name}, owner) != nil {
		return out
	}
	if top := metav1.GetControllerOf(owner); top != nil && policy.OwnedTemplate(owner) {
		return &corev1.ObjectReference{APIVersion: top.APIVersion, Kind: top.Kind, Namespace: pod.Namespace, Name: top.Name, UID: top.UID}
	}
	return out
}

// tally is what is not yet announced about one workload.
type tally struct {
	ref      *corev1.ObjectReference
	policies map[policy.ID]*newlyFound // since the last Event
	last     time.Time
	due      *time.Timer
}

// newlyFound counts the pods newly found in violation of one policy, with
// one of them and its message.
type newlyFound struct {
	pods    int
	example *corev1.ObjectReference
	message string
}

// ownerEvents announces, for each workload, the pods newly found in
// violation, by policy: at most one Event per workload per audit interval,
// the first ownerSettle (or the interval, if shorter) after the first pod.
// One Event names every policy: the Events API makes a second Event about
// the same object, reason and action, within minutes, a repeat of the first
// (a series, with the first's note), unless its related object differs; a
// later Event's related object is a pod it names.
type ownerEvents struct {
	settle   time.Duration // ownerSettle; shorter in tests
	interval func() time.Duration
	record   func(regarding, related *corev1.ObjectReference, note string)

	mu sync.Mutex
	m  map[types.UID]*tally
}

// add counts pod, newly found in violation of id with message (the policy's
// rendered findings).
func (o *ownerEvents) add(ctx context.Context, ref *corev1.ObjectReference, id policy.ID, pod *corev1.Pod, message string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[types.UID]*tally{}
	}
	t := o.m[ref.UID]
	if t == nil {
		t = &tally{}
		o.m[ref.UID] = t
	}
	t.ref = ref
	if t.policies == nil {
		t.policies = map[policy.ID]*newlyFound{}
	}
	f := t.policies[id]
	if f == nil {
		f = &newlyFound{}
		t.policies[id] = f
	}
	f.pods++
	f.example = &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	f.message = message
	if t.due != nil {
		return
	}
	now := time.Now()
	at := now.Add(min(o.settle, o.interval()))
	if next := t.last.Add(o.interval()); next.After(at) {
		at = next
	}
	t.due = time.AfterFunc(at.Sub(now), func() { o.flush(ctx, ref.UID) })
}

// flush records the Event about the workload uid.
func (o *ownerEvents) flush(ctx context.Context, uid types.UID) {
	o.mu.Lock()
	t := o.m[uid]
	if t == nil || ctx.Err() != nil {
		o.mu.Unlock()
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s/%s", t.ref.Kind, t.ref.Namespace, t.ref.Name)
	if !t.last.IsZero() {
		fmt.Fprintf(&b, ", since %s", t.last.UTC().Format(time.RFC3339))
	}
	b.WriteString(":")
	var related *corev1.ObjectReference
	for i, id := range slices.Sorted(maps.Keys(t.policies)) {
		f := t.policies[id]
		if i > 0 {
			b.WriteString(";")
		} else {
			related = f.example
		}
		pods := "1 pod"
		if f.pods > 1 {
			pods = fmt.Sprintf("%d pods", f.pods)
		}
		fmt.Fprintf(&b, " %s%s%s, e.g. pod %s: %s", pods, ownerNoteMark, id, f.example.Name, f.message)
	}
	ref := t.ref
	t.policies, t.due, t.last = nil, nil, time.Now()
	// Workloads announced long enough ago are forgotten.
	for key, other := range o.m {
		if other.due == nil && time.Since(other.last) > 2*o.interval() {
			delete(o.m, key)
		}
	}
	o.mu.Unlock()
	o.record(ref, related, policy.Shorten(b.String(), policy.MaxNoteBytes))
}

// ownerNoteMark precedes the policy in a workload's Event note.
const ownerNoteMark = " newly in violation of "

// ownerNotePolicies returns the policies a workload's Event note names.
func ownerNotePolicies(note string) []policy.ID {
	var ids []policy.ID
	for {
		_, after, ok := strings.Cut(note, ownerNoteMark)
		if !ok {
			return ids
		}
		id, _, _ := strings.Cut(after, ",")
		if id != "" {
			ids = append(ids, policy.ID(id))
		}
		note = after
	}
}
