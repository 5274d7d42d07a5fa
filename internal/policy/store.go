package policy

import (
	"sync"
	"sync/atomic"
)

// Store holds the engine in force. Front-ends Load it once per object, so a
// configuration reload never changes the rules halfway through a request.
type Store struct {
	current atomic.Pointer[Engine]

	mu      sync.Mutex
	changed chan struct{} // closed by the next Swap
}

// NewStore returns a store holding e.
func NewStore(e *Engine) *Store {
	s := &Store{changed: make(chan struct{})}
	s.current.Store(e)
	return s
}

// Load returns the engine in force.
func (s *Store) Load() *Engine { return s.current.Load() }

// Swap puts e in force and wakes everyone waiting on Changed.
func (s *Store) Swap(e *Engine) {
	s.current.Store(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the next Swap. Front-ends that
// keep state derived from the engine (the kube-proxy controller) take it
// before reading the engine, so that no swap goes unnoticed.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}
