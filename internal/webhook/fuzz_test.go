package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// The fuzz targets post raw bytes to each admission handler as the API server
// would, with panics not recovered (the server recovers them; here they must
// surface). Their seed corpora run in `make test`; `make fuzz` runs each
// target for FUZZTIME. The invariants, for any input:
//   - the answer is HTTP 200 with an AdmissionReview that has a response;
//   - a request that decodes gets its own UID back;
//   - a patch is a JSON Patch that applies to the object;
//   - mutation is idempotent: the patched object needs no further patch
//     (reinvocationPolicy: IfNeeded relies on it);
//   - the pod mutator, which decodes only what the Mutating rules read,
//     gets the same results from them as a whole decoded pod;
//   - it answers the same whether its pod is decoded with the review (one
//     pass, as served) or from req.Object.Raw.

// fuzzSeeds are realistic requests and the bad inputs of the unit tests.
func fuzzSeeds() [][]byte {
	seeds := []string{
		review("CREATE", "pods", pinnedPod),
		review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"hostNetwork":true,"containers":[{"name":"c"}],"initContainers":[{"name":"i","env":[{"name":"KUBERNETES_SERVICE_HOST","valueFrom":{"fieldRef":{"fieldPath":"status.hostIP"}}}]}]}}`),
		review("CREATE", "pods", apiServerMirrorPod),
		review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kube-proxy-node-going","annotations":{"kubernetes.io/config.mirror":"a"},"labels":{"component":"kube-proxy"}},"spec":{"nodeName":"node-going","hostNetwork":true,"containers":[{"name":"kube-proxy"}]}}`),
		validationReview{operation: "CREATE", resource: "/v1/pods", object: apiServerMirrorPod}.String(),
		validationReview{operation: "CREATE", resource: "apps/v1/deployments", object: kubeVIPDeployment("v0.8.4", 2)}.String(),
		validationReview{operation: "UPDATE", resource: "apps/v1/deployments", object: kubeVIPDeployment("v0.8.4", 2), oldObject: kubeVIPDeployment("v0.8.3", 2), dryRun: true}.String(),
		validationReview{operation: "CREATE", resource: "/v1/configmaps", object: kubeadmConfigShared}.String(),
		validationReview{operation: "UPDATE", resource: "/v1/configmaps", object: kubeadmConfigClean, oldObject: kubeadmConfigShared}.String(),
		review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","spec":{"containers":"many"}}`),
		review("CREATE", "pods", `null`),
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":`,
		`{}`,
		``,
	}
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = []byte(s)
	}
	return out
}

// serve posts body to h and checks the invariants every answer must hold.
func serve(t *testing.T, h http.Handler, path string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rr.Code, rr.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rr.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("the answer is not an AdmissionReview with a response (%v): %s", err, rr.Body)
	}
	var in admissionv1.AdmissionReview
	if json.Unmarshal(body, &in) == nil && in.Request != nil && in.Request.UID != "" && out.Response.UID != in.Request.UID {
		// An error before the request decodes (a body over the size limit,
		// for the validators a field of the wrong type outside the object)
		// has no UID to return; one after it must, and the pod mutator's
		// refusal of an object that does not decode keeps it too
		// (TestErroredReviewsKeepTheirUID).
		if r := out.Response.Result; r == nil || (r.Code != http.StatusBadRequest && r.Code != http.StatusRequestEntityTooLarge) {
			t.Fatalf("response UID %q, request UID %q", out.Response.UID, in.Request.UID)
		}
	}
	return out.Response
}

// patched applies resp's patch to the request's object; nil without a patch.
func patched(t *testing.T, body []byte, resp *admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if len(resp.Patch) == 0 {
		return nil
	}
	if !resp.Allowed {
		t.Fatalf("a patch on a denial: %s", resp.Patch)
	}
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil || in.Request == nil {
		t.Fatalf("a patch for a request that does not decode: %v", err)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("the patch is not a JSON Patch: %v: %s", err, resp.Patch)
	}
	out, err := p.Apply(in.Request.Object.Raw)
	if err != nil {
		t.Fatalf("the patch does not apply: %v\npatch: %s\nobject: %s", err, resp.Patch, in.Request.Object.Raw)
	}
	return out
}

func newFuzzMutator(t testing.TB) http.Handler {
	engine, rec, _ := engineFor(t, "")
	m, err := webhook.NewPodMutator(engine, testCluster, rec)
	if err != nil {
		t.Fatal(err)
	}
	return m.WithRecoverPanic(false)
}

func newFuzzValidator(t testing.TB, path string, kinds webhook.Kinds) http.Handler {
	engine, rec, _ := engineFor(t, "")
	// A FakeRecorder without a channel drops the Events.
	v, err := webhook.NewValidator(path, kinds, engine, testCluster, rec, &events.FakeRecorder{})
	if err != nil {
		t.Fatal(err)
	}
	return (&admission.Webhook{Handler: v}).WithRecoverPanic(false)
}

func FuzzPodMutator(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	for _, bp := range benchPods() {
		f.Add(fixtures.Review(bp.pod, "pods"))
	}
	h := newFuzzMutator(f)
	engine, rec, _ := engineFor(f, "")
	m, err := webhook.NewPodMutator(engine, testCluster, rec)
	if err != nil {
		f.Fatal(err)
	}
	// The same mutator without the one-pass decoding: controller-runtime's
	// HTTP layer decodes the review, the mutator then req.Object.Raw.
	twoPass := (&admission.Webhook{Handler: m}).WithRecoverPanic(false)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req admissionv1.AdmissionReview
		if json.Unmarshal(body, &req) == nil && req.Request != nil {
			if diff := webhook.MutatingDecodingsAgree(engine, testCluster, req.Request.Object.Raw); diff != "" {
				t.Fatalf("the pod mutator's decoding changes the Mutating rules' results:\n%s\nobject: %s", diff, req.Request.Object.Raw)
			}
		}
		resp := serve(t, h, webhook.MutatePodPath, body)
		// Reviews our HTTP layer refuses (no UID in the answer, or one
		// whose object does not decode: "cannot decode the AdmissionReview")
		// may be read more leniently by controller-runtime's (a missing kind)
		// or refused in other words: only the answers to a review both read
		// must be the same.
		refused := resp.UID == "" || (resp.Result != nil && strings.HasPrefix(resp.Result.Message, "cannot decode the AdmissionReview"))
		if want := serve(t, twoPass, webhook.MutatePodPath, body); !refused && !reflect.DeepEqual(resp, want) {
			t.Fatalf("the one-pass decoding answers %+v, the two-pass one %+v", resp, want)
		}
		obj := patched(t, body, resp)
		if obj == nil {
			return
		}
		var in admissionv1.AdmissionReview
		_ = json.Unmarshal(body, &in)
		in.Request.Object.Raw = obj
		again, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if resp := serve(t, h, webhook.MutatePodPath, again); len(resp.Patch) > 0 {
			t.Fatalf("not idempotent: the patched object is patched again: %s\nobject: %s", resp.Patch, obj)
		}
	})
}

func FuzzValidateWorkloads(f *testing.F) {
	fuzzValidator(f, webhook.ValidateWorkloadsPath, webhook.WorkloadKinds)
}

func FuzzValidateKubeadmConfig(f *testing.F) {
	fuzzValidator(f, webhook.ValidateKubeadmConfigPath, webhook.ConfigMapKinds)
}

func fuzzValidator(f *testing.F, path string, kinds webhook.Kinds) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	h := newFuzzValidator(f, path, kinds)
	f.Fuzz(func(t *testing.T, body []byte) {
		if resp := serve(t, h, path, body); len(resp.Patch) > 0 {
			t.Fatalf("a validating webhook answered with a patch: %s", resp.Patch)
		}
	})
}
