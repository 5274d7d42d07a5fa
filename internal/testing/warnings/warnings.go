// Package warnings collects the warnings an API server returns to a client,
// the ones kubectl prints as "Warning: ...", for tests and the demo.
package warnings

import (
	"context"
	"sync"
)

// Recorder implements rest.WarningHandlerWithContext.
type Recorder struct {
	mu       sync.Mutex
	messages []string
}

// HandleWarningHeaderWithContext implements rest.WarningHandlerWithContext.
func (r *Recorder) HandleWarningHeaderWithContext(_ context.Context, code int, _ string, message string) {
	if code != 299 { // the only code the API server uses for warnings
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages = append(r.messages, message)
}

// During returns the warnings received while f ran. Calls must not overlap.
func (r *Recorder) During(f func()) []string {
	r.mu.Lock()
	start := len(r.messages)
	r.mu.Unlock()
	f()
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.messages[start:]...)
}
