package webhook_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
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

// TestErroredReviewsKeepTheirUID: a review whose object does not decode as
// its webhook's type is answered 400 with the field named and the request's
// uid, on every webhook path, so that the API server logs the field rather
// than a uid mismatch.
func TestErroredReviewsKeepTheirUID(t *testing.T) {
	mutator := newFuzzMutator(t)
	validators := map[string]http.Handler{}
	for path, kinds := range map[string]webhook.Kinds{
		webhook.ValidateWorkloadsPath:     webhook.WorkloadKinds,
		webhook.ValidateKubeadmConfigPath: webhook.ConfigMapKinds,
		webhook.ValidateConfigMapsPath:    webhook.ConfigMapKinds,
	} {
		validators[path] = newFuzzValidator(t, path, kinds)
	}
	const uid = "3f1d9c2e-0000-4000-8000-00000000beef"
	// The requests of review and validationReview, each with its own uid.
	withUID := strings.NewReplacer("7c4e2f6a-0000-4000-8000-000000000001", uid, "7c4e2f6a-0000-4000-8000-000000000002", uid).Replace
	for _, tt := range []struct {
		name    string
		handler http.Handler
		path    string
		body    string
		wantMsg string
	}{
		{name: "pod mutator: hostNetwork a string", handler: mutator, path: webhook.MutatePodPath,
			body: review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","spec":{"hostNetwork":"yes"}}`), wantMsg: "spec.hostNetwork"},
		{name: "pod mutator, v1beta1: containers a string", handler: mutator, path: webhook.MutatePodPath,
			body:    strings.Replace(review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","spec":{"containers":"many"}}`), "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1),
			wantMsg: "spec.containers"},
		{name: "workloads: a pod's hostNetwork a string", handler: validators[webhook.ValidateWorkloadsPath], path: webhook.ValidateWorkloadsPath,
			body: validationReview{operation: "CREATE", resource: "/v1/pods", object: `{"apiVersion":"v1","kind":"Pod","spec":{"hostNetwork":"yes"}}`}.String(), wantMsg: "hostNetwork"},
		{name: "workloads: a Deployment's replicas a string", handler: validators[webhook.ValidateWorkloadsPath], path: webhook.ValidateWorkloadsPath,
			body: validationReview{operation: "CREATE", resource: "apps/v1/deployments", object: `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"replicas":"two"}}`}.String(), wantMsg: "replicas"},
		{name: "kubeadm-config: data a number", handler: validators[webhook.ValidateKubeadmConfigPath], path: webhook.ValidateKubeadmConfigPath,
			body: validationReview{operation: "CREATE", resource: "/v1/configmaps", object: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kubeadm-config"},"data":{"ClusterConfiguration":1}}`}.String(), wantMsg: "data"},
		{name: "cluster ConfigMaps: data a number", handler: validators[webhook.ValidateConfigMapsPath], path: webhook.ValidateConfigMapsPath,
			body: validationReview{operation: "UPDATE", resource: "/v1/configmaps", object: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kube-proxy"},"data":{"kubeconfig.conf":1}}`}.String(), wantMsg: "data"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := withUID(tt.body)
			if !strings.Contains(body, uid) {
				t.Fatalf("the review has no uid to replace: %s", tt.body)
			}
			resp := serve(t, tt.handler, tt.path, []byte(body))
			if resp.UID != uid {
				t.Errorf("response uid %q, want the request's %q", resp.UID, uid)
			}
			if r := resp.Result; resp.Allowed || r == nil || r.Code != http.StatusBadRequest || !strings.Contains(r.Message, tt.wantMsg) {
				t.Errorf("want a 400 naming %q: %+v", tt.wantMsg, resp.Result)
			}
		})
	}
}
