package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// MaxRequestBytes is the largest AdmissionReview accepted, as
// controller-runtime's: the API server's own request limit is 3 MiB of
// object, plus the review around it.
const MaxRequestBytes = 7 << 20

// The pod mutator's HTTP layer. It reads the AdmissionReview as
// controller-runtime's admission.Webhook.ServeHTTP does (empty body, body
// limit, content type, v1 and v1beta1) but decodes it in one pass, with the
// pod as policy.MutationPod, case-sensitively like the API server, where the
// universal deserializer first parses the whole body once more to find its
// kind and the handler then parses the object a third time. Those passes
// were 15% of the server's CPU at saturation (BenchmarkServer's profile);
// see BenchmarkPodMutator/*/ours/http. The answer is then computed by the
// stock admission.Webhook.Handle: panic recovery, the request's logger,
// completing the response. The validators are served by the stock
// admission.Webhook as they are.

// reviewWithPod is an AdmissionReview whose request's object is decoded as a
// policy.MutationPod, in the same pass, rather than copied into
// AdmissionRequest.Object.Raw, which it shadows.
type reviewWithPod struct {
	metav1.TypeMeta `json:",inline"`
	Request         *requestWithPod `json:"request,omitempty"`
}

type requestWithPod struct {
	admissionv1.AdmissionRequest `json:",inline"`
	// Object is decoded in place, in the review's one pass: nil when the
	// request has none (or null). An object that does not decode fails the
	// review's decoding, with the field named (a custom UnmarshalJSON that
	// kept the error would have the decoder scan the pod twice more:
	// BenchmarkPodMutator/*/ours/http, 220 → 316 µs on cilium-operator).
	Object *policy.MutationPod `json:"object"`
}

var (
	reviewV1      = admissionv1.SchemeGroupVersion.WithKind("AdmissionReview")
	reviewV1beta1 = admissionv1beta1.SchemeGroupVersion.WithKind("AdmissionReview")
)

// ServeHTTP implements http.Handler.
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, code, err := readBody(r)
	if err != nil {
		fail(w, m.log, code, err)
		return
	}
	review := reviewWithPod{Request: &requestWithPod{}}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &review); err != nil {
		failReview(w, m.log, body, fmt.Errorf("cannot decode the AdmissionReview (its object as a v1 Pod): %w", err))
		return
	}
	// v1beta1 has v1's shape; the answer has the request's version.
	gvk := review.GroupVersionKind()
	if gvk != reviewV1 && gvk != reviewV1beta1 {
		fail(w, m.log, http.StatusBadRequest, fmt.Errorf("the request is not an AdmissionReview of admission.k8s.io/v1 (or v1beta1): apiVersion %q, kind %q",
			review.APIVersion, review.Kind))
		return
	}
	if review.Request == nil {
		fail(w, m.log, http.StatusBadRequest, errors.New("the AdmissionReview has no request"))
		return
	}
	req := admission.Request{AdmissionRequest: review.Request.AdmissionRequest}
	if pod := review.Request.Object; pod != nil {
		req.Object.Object = pod
	}
	resp := m.webhook.Handle(r.Context(), req)
	write(w, m.log, gvk, &resp.AdmissionResponse)
}

// readBody reads an AdmissionReview's body as controller-runtime does, or
// says which HTTP status its problem is.
func readBody(r *http.Request) ([]byte, int32, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, http.StatusBadRequest, errors.New("request body is empty")
	}
	defer r.Body.Close()
	limited := &io.LimitedReader{R: r.Body, N: MaxRequestBytes}
	body, err := io.ReadAll(limited)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err)
	}
	if limited.N <= 0 {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxRequestBytes)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return nil, http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct)
	}
	return body, 0, nil
}

func fail(w http.ResponseWriter, log logr.Logger, code int32, err error) {
	log.Error(err, "Bad admission request")
	resp := admission.Errored(code, err)
	write(w, log, reviewV1, &resp.AdmissionResponse)
}

// reviewIdentity is what an answer needs of a review: its version and its
// request's uid, which the API server matches the response against.
type reviewIdentity struct {
	metav1.TypeMeta `json:",inline"`
	Request         *struct {
		UID types.UID `json:"uid"`
	} `json:"request"`
}

// failReview answers a review whose typed decoding failed with err (400):
// with the request's uid and version, read again from body, so that the API
// server logs err, the field it names, rather than a uid mismatch. Only this
// error path pays for the second, partial decoding; the one pass of a good
// review is unchanged (BenchmarkPodMutator).
func failReview(w http.ResponseWriter, log logr.Logger, body []byte, err error) {
	var id reviewIdentity
	// Partial on purpose: a field of the wrong type elsewhere leaves the uid
	// decoded (encoding/json goes on after a type error).
	_ = json.Unmarshal(body, &id)
	log.Error(err, "Bad admission request")
	resp := admission.Errored(http.StatusBadRequest, err)
	gvk := id.GroupVersionKind()
	if gvk != reviewV1 && gvk != reviewV1beta1 {
		gvk = reviewV1
	}
	if id.Request != nil {
		resp.UID = id.Request.UID
	}
	write(w, log, gvk, &resp.AdmissionResponse)
}

func write(w http.ResponseWriter, log logr.Logger, gvk schema.GroupVersionKind, resp *admissionv1.AdmissionResponse) {
	out := admissionv1.AdmissionReview{Response: resp}
	out.SetGroupVersionKind(gvk)
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		// The connection failed; nothing more can be written to it.
		log.Error(err, "Cannot write the admission response")
	}
}
