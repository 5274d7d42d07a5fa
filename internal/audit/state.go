package audit

// The violations in force, their counts, and which reports are out of date.

import (
	"slices"
	"sync"
	"time"

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

	// matches counts the exempted violations by exemption name;
	// exemptions are the names of those in force (setExemptions).
	matches        map[string]int
	exemptions     []string
	matchesChanged bool
}

func newState(m *metrics.Recorder) *state {
	return &state{
		metrics:     m,
		byNamespace: map[string]map[Key]*entry{},
		counts:      map[countKey]int{},
		dirty:       map[string]bool{},
		retries:     map[string]bool{},
		wake:        make(chan struct{}, 1),
		matches:     map[string]int{},
	}
}

// set replaces k's violations and passes (ref nil: k is gone or not audited)
// and returns the violations that are new, which deserve an Event, and the
// exempted violations before whose exemption has expired since (lapsed),
// which deserve one too. A violation seen before keeps the time it was
// first seen.
func (s *state) set(k Key, ref *objectRef, violations []violation, passes int) (added, lapsed []violation) {
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
		return nil, nil
	}
	lapsed = expired(known, violations, time.Now())
	for _, v := range before {
		s.tally(k, v, -1)
	}
	for _, v := range violations {
		s.tally(k, v, +1)
	}
	s.publishMatches()
	s.store(k, ref, violations, passes)
	s.dirty[k.Namespace] = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return added, lapsed
}

// expired returns the violations of known that an exemption covered until
// it expired (before now), whose policy still has a violation, no longer
// exempted.
func expired(known, violations []violation, now time.Time) []violation {
	var out []violation
	for _, o := range known {
		if o.Exemption == nil || o.Exemption.Live(now) {
			continue
		}
		if slices.ContainsFunc(violations, func(v violation) bool { return v.Policy == o.Policy && v.Exemption == nil }) {
			out = append(out, o)
		}
	}
	return out
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

// has reports whether the state holds a result of k.
func (s *state) has(k Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.byNamespace[k.Namespace][k]
	return ok
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

// tally counts v for k: a violation in the violation gauge, an exempted
// one in its exemption's matches.
func (s *state) tally(k Key, v violation, delta int) {
	if v.Exemption != nil {
		s.matches[v.Exemption.Name] += delta
		s.matchesChanged = true
		return
	}
	s.count(countKey{v.Policy, k.Namespace, k.Kind}, delta)
}

// setExemptions says which exemptions the configuration in force has: their
// matches are exported, 0 for one that matches nothing.
func (s *state) setExemptions(names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exemptions = names
	s.matchesChanged = true
	s.publishMatches()
}

// unmatched returns the exemptions in force that exempt nothing now.
func (s *state) unmatched() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, name := range s.exemptions {
		if s.matches[name] <= 0 {
			out = append(out, name)
		}
	}
	return out
}

// publishMatches exports the matches of the exemptions in force, when they
// changed; s.mu is held.
func (s *state) publishMatches() {
	if !s.matchesChanged {
		return
	}
	s.matchesChanged = false
	out := make(map[string]int, len(s.exemptions))
	for _, name := range s.exemptions {
		out[name] = max(0, s.matches[name])
	}
	for name, n := range s.matches {
		if n <= 0 {
			delete(s.matches, name)
		}
	}
	s.metrics.ExemptionMatches(out)
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
