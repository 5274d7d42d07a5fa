package policy

import "sync/atomic"

// Store holds the engine in force. Front-ends Load it once per object, so a
// configuration reload never changes the rules halfway through a request.
type Store struct {
	current atomic.Pointer[Engine]
}

// NewStore returns a store holding e.
func NewStore(e *Engine) *Store {
	s := &Store{}
	s.current.Store(e)
	return s
}

// Load returns the engine in force.
func (s *Store) Load() *Engine { return s.current.Load() }

// Swap puts e in force.
func (s *Store) Swap(e *Engine) { s.current.Store(e) }
