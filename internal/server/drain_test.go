package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestDrain(t *testing.T) {
	d := newDrain()
	h := d.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	serve := func() *httptest.ResponseRecorder {
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, httptest.NewRequest(http.MethodPost, "/mutate-v1-pod", nil))
		return rr
	}

	if err := d.checker(nil); err != nil {
		t.Errorf("not ready before the drain: %v", err)
	}
	if got := serve().Header().Get("Connection"); got != "" {
		t.Errorf("Connection: %q before the drain, want the connection kept alive", got)
	}

	d.start()
	if err := d.checker(nil); err == nil {
		t.Error("ready while draining")
	}
	rr := serve()
	if got := rr.Header().Get("Connection"); got != "close" {
		t.Errorf("Connection: %q while draining, want close", got)
	}
	if rr.Code != http.StatusOK {
		t.Errorf("HTTP %d while draining: requests must still be served", rr.Code)
	}
}
