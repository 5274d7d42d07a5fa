package audit

// The violations in force, their counts, and which reports are out of date.

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// objectRef is an audited object, as a report names it.
type objectRef struct {
	APIVersion, Kind, Namespace, Name string
	UID                               types.UID
	// The controller of a pod (its DaemonSet, ReplicaSet, StatefulSet,
	// Job), by which a capped report counts pods.
	OwnerAPIVersion, OwnerKind, OwnerName string
	OwnerUID                              types.UID
}

// reference renders r as a report result's resource (an ObjectReference).
func (r objectRef) reference() map[string]any {
	return map[string]any{
		"apiVersion": r.APIVersion,
		"kind":       r.Kind,
		"namespace":  r.Namespace,
		"name":       r.Name,
		"uid":        string(r.UID),
	}
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
	old := s.byNamespace[k.Namespace][k]
	var before, known []violation
	if old != nil {
		before = old.violations
		if ref != nil && ref.UID == old.ref.UID {
			known = before // not a new object under the same name
		}
	}
	added = keepSince(violations, known)
	if !changed(old, ref, violations, passes) {
		return nil
	}
	for _, v := range before {
		s.count(countKey{v.Policy, k.Namespace, k.Kind}, -1)
	}
	for _, v := range violations {
		s.count(countKey{v.Policy, k.Namespace, k.Kind}, +1)
	}
	s.store(k, ref, violations, passes)
	s.dirty[k.Namespace] = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return added
}

// keepSince gives each of violations seen among known the time it was first
// seen, and returns the others: the new ones. The same finding in another
// mode (a configuration reload) is the same violation: it keeps its time and
// is not announced again.
func keepSince(violations, known []violation) (added []violation) {
	for i, v := range violations {
		if j := slices.IndexFunc(known, v.sameFinding); j >= 0 {
			violations[i].Since = known[j].Since
		} else {
			added = append(added, v)
		}
	}
	return added
}

// changed reports whether the entry old differs from what set is given.
func changed(old *entry, ref *objectRef, violations []violation, passes int) bool {
	if old == nil {
		return len(violations) > 0 || passes > 0
	}
	return ref == nil || *ref != old.ref || old.passes != passes || !slices.EqualFunc(old.violations, violations, violation.same)
}

// store puts k's entry, or removes it when k is gone or has no result.
func (s *state) store(k Key, ref *objectRef, violations []violation, passes int) {
	ns := s.byNamespace[k.Namespace]
	if ref == nil || (len(violations) == 0 && passes == 0) {
		delete(ns, k)
		if len(ns) == 0 {
			delete(s.byNamespace, k.Namespace)
		}
		return
	}
	if ns == nil {
		ns = map[Key]*entry{}
		s.byNamespace[k.Namespace] = ns
	}
	ns[k] = &entry{ref: *ref, violations: violations, passes: passes}
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
