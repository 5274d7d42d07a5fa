// Package announce remembers the announcements (Events) already made, so
// that a front-end makes each one once: the background audit one Event per
// violation (seeded with an earlier leader's), the kube-proxy controller one
// per pod and reason.
package announce

import "sync"

// Set holds, per subject (an object's UID, a node's name), the
// announcements made about it: each under its key, with the value
// announced. The zero Set is empty and ready; it is safe for concurrent use.
type Set[S, K, V comparable] struct {
	mu sync.Mutex
	m  map[S]map[K]V
}

// Has reports whether v was announced under key about subject.
func (s *Set[S, K, V]) Has(subject S, key K, v V) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, ok := s.m[subject][key]
	return ok && got == v
}

// Take is Has, and forgets the announcement: it answers true once.
func (s *Set[S, K, V]) Take(subject S, key K, v V) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, ok := s.m[subject][key]
	if !ok || got != v {
		return false
	}
	delete(s.m[subject], key)
	if len(s.m[subject]) == 0 {
		delete(s.m, subject)
	}
	return true
}

// Replace makes announced the announcements about subject; none forgets
// the subject.
func (s *Set[S, K, V]) Replace(subject S, announced map[K]V) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(announced) == 0 {
		delete(s.m, subject)
		return
	}
	if s.m == nil {
		s.m = map[S]map[K]V{}
	}
	s.m[subject] = announced
}

// Len returns the number of subjects with announcements.
func (s *Set[S, K, V]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Reset forgets every announcement.
func (s *Set[S, K, V]) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = nil
}
