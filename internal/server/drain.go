package server

import (
	"errors"
	"net/http"
	"sync/atomic"
)

// drain is the first step of a graceful stop. Once started, the server
// reports not-ready and answers each request with "Connection: close", so
// the API server's kept-alive connections close cleanly after their next
// response instead of being cut while idle, when a request sent at that
// moment would be lost. The webhook server then stops (http.Server.Shutdown:
// no new connections, idle ones closed, in-flight requests finish).
type drain struct{ draining atomic.Bool }

func newDrain() *drain { return &drain{} }

func (d *drain) start() { d.draining.Store(true) }

// checker is a readyz check: failing while draining.
func (d *drain) checker(*http.Request) error {
	if d.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// wrap closes the connection after the response while draining.
func (d *drain) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}
