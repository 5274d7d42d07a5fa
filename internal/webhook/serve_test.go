package webhook_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// TestReviews: what the API server sees of the HTTP layer, besides the
// bad input of TestHostileInput.
func TestReviews(t *testing.T) {
	h := newHarness(t, "")
	for _, tt := range []struct {
		name, contentType, body string
		wantCode                int32 // 0: allowed
		wantAPIVersion          string
		wantMessage             string
	}{
		{name: "v1", contentType: "application/json", body: review("CREATE", "pods", pinnedPod), wantAPIVersion: "admission.k8s.io/v1"},
		{name: "v1beta1 is answered as v1beta1", contentType: "application/json",
			body:           strings.Replace(review("CREATE", "pods", pinnedPod), "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1),
			wantAPIVersion: "admission.k8s.io/v1beta1"},
		{name: "another kind", contentType: "application/json", body: `{"apiVersion":"v1","kind":"Pod","request":{"uid":"u"}}`,
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: `apiVersion "v1", kind "Pod"`},
		{name: "no kind", contentType: "application/json", body: `{"request":{"uid":"u"}}`,
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: `not an AdmissionReview of admission.k8s.io/v1 (or v1beta1): apiVersion "", kind ""`},
		{name: "null request", contentType: "application/json", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`,
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: "has no request"},
		{name: "no object", contentType: "application/json", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","resource":{"version":"v1","resource":"pods"}}}`,
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: "admission request has no object"},
		{name: "null object", contentType: "application/json", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","resource":{"version":"v1","resource":"pods"},"object":null}}`,
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: "admission request has no object"},
		{name: "an object the pod type cannot hold", contentType: "application/json", body: review("CREATE", "pods", `{"spec":{"hostNetwork":"yes"}}`),
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: "request.object.spec.hostNetwork of type bool"},
		{name: "not JSON", contentType: "application/yaml", body: review("CREATE", "pods", pinnedPod),
			wantCode: http.StatusBadRequest, wantAPIVersion: "admission.k8s.io/v1", wantMessage: "expected application/json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/mutate-v1-pod", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.contentType)
			rr := httptest.NewRecorder()
			h.handler.ServeHTTP(rr, req)
			if rr.Code != http.StatusOK || rr.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("HTTP %d, Content-Type %q", rr.Code, rr.Header().Get("Content-Type"))
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rr.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("not an AdmissionReview with a response (%v): %s", err, rr.Body)
			}
			if out.APIVersion != tt.wantAPIVersion || out.Kind != "AdmissionReview" {
				t.Errorf("answered as %s %s, want %s AdmissionReview", out.APIVersion, out.Kind, tt.wantAPIVersion)
			}
			if tt.wantCode == 0 {
				if !out.Response.Allowed || out.Response.UID == "" || len(out.Response.Patch) == 0 {
					t.Errorf("want allowed with a patch and the UID: %+v", out.Response)
				}
				return
			}
			if r := out.Response.Result; out.Response.Allowed || r == nil || r.Code != tt.wantCode || !strings.Contains(r.Message, tt.wantMessage) {
				t.Errorf("want HTTP %d with %q in the result: %+v", tt.wantCode, tt.wantMessage, out.Response.Result)
			}
		})
	}
}
