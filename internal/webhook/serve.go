package webhook

import (
	"context"
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
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"
)

// MaxRequestBytes is the largest AdmissionReview accepted, as
// controller-runtime's: the API server's own request limit is 3 MiB of
// object, plus the review around it.
const MaxRequestBytes = 7 << 20

// Reviews serves AdmissionReviews to an admission.Handler over HTTP. It is
// controller-runtime's admission.Webhook, whose Handle it calls (panic
// recovery, the request's logger, completing the response), with its own
// reading of the request: the review is decoded in one pass, case-sensitively
// like the API server, where the universal deserializer first parses the
// whole body once more to find its kind. That pass was 15% of the server's
// CPU at saturation (BenchmarkServer's profile); see
// BenchmarkPodMutator/*/ours/http.
type Reviews struct {
	webhook *admission.Webhook
	decoder objectDecoder // nil: the handler decodes req.Object.Raw
	log     logr.Logger
}

// objectDecoder is a handler whose object is decoded with the review, in
// the same pass over the body, instead of copied to req.Object.Raw and
// parsed again (the pod mutator: BenchmarkPodMutator/*/ours/http).
type objectDecoder interface {
	admission.Handler
	// newObject returns a pointer to decode the request's object into.
	newObject() any
	// decoded reports whether the review's decoding put an object into obj:
	// false for none (an absent "object" leaves it as newObject made it),
	// and the request is then decoded the usual way.
	decoded(obj any) bool
	// handleDecoded answers req, whose object was decoded into obj; obj is
	// nil when the request has none.
	handleDecoded(ctx context.Context, req admission.Request, obj any) admission.Response
}

// decodedObject is the context key of the object decoded with the review.
type decodedObject struct{}

// Serve returns the HTTP handler of h.
func Serve(h admission.Handler) *Reviews {
	rv := &Reviews{log: logf.Log.WithName("admission")}
	if d, ok := h.(objectDecoder); ok {
		rv.decoder = d
		h = admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
			if obj, ok := ctx.Value(decodedObject{}).(*any); ok {
				return d.handleDecoded(ctx, req, *obj)
			}
			return d.Handle(ctx, req)
		})
	}
	rv.webhook = &admission.Webhook{Handler: h}
	return rv
}

// reviewWithObject is an AdmissionReview whose request's object is decoded
// into Object's pointer (encoding/json fills a pointer held by a non-nil
// interface) rather than into AdmissionRequest.Object, which it shadows.
type reviewWithObject struct {
	metav1.TypeMeta `json:",inline"`
	Request         *requestWithObject `json:"request,omitempty"`
}

type requestWithObject struct {
	admissionv1.AdmissionRequest `json:",inline"`
	Object                       any `json:"object,omitempty"`
}

// WithRecoverPanic sets whether a panic in the handler is answered with an
// error (the default) or propagated, for tests.
func (rv *Reviews) WithRecoverPanic(recoverPanic bool) *Reviews {
	rv.webhook.WithRecoverPanic(recoverPanic)
	return rv
}

var (
	reviewV1      = admissionv1.SchemeGroupVersion.WithKind("AdmissionReview")
	reviewV1beta1 = admissionv1beta1.SchemeGroupVersion.WithKind("AdmissionReview")
)

// ServeHTTP implements http.Handler.
func (rv *Reviews) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		rv.fail(w, http.StatusBadRequest, errors.New("request body is empty"))
		return
	}
	defer r.Body.Close()
	limited := &io.LimitedReader{R: r.Body, N: MaxRequestBytes}
	body, err := io.ReadAll(limited)
	if err != nil {
		rv.fail(w, http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err))
		return
	}
	if limited.N <= 0 {
		rv.fail(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxRequestBytes))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		rv.fail(w, http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct))
		return
	}

	var (
		req        admission.Request
		typeMeta   *metav1.TypeMeta
		hasRequest bool
		decodeErr  error
		ctx        = r.Context()
	)
	if rv.decoder != nil {
		withObject := &requestWithObject{Object: rv.decoder.newObject()}
		review := reviewWithObject{Request: withObject}
		decodeErr = sigsjson.UnmarshalCaseSensitivePreserveInts(body, &review)
		typeMeta, hasRequest = &review.TypeMeta, review.Request != nil
		req.AdmissionRequest = withObject.AdmissionRequest
		ctx = context.WithValue(ctx, decodedObject{}, &withObject.Object)
	}
	if rv.decoder != nil && decodeErr == nil && !rv.decoder.decoded(*ctx.Value(decodedObject{}).(*any)) {
		decodeErr = errNoObject // decoded again below, as without a decoder
	}
	if rv.decoder == nil || decodeErr != nil {
		// Also when the object did not decode with the review: the
		// handler then decodes req.Object.Raw itself, and its answer names
		// the object and carries the request's UID.
		req, ctx = admission.Request{}, r.Context()
		review := admissionv1.AdmissionReview{Request: &req.AdmissionRequest}
		decodeErr = sigsjson.UnmarshalCaseSensitivePreserveInts(body, &review)
		typeMeta, hasRequest = &review.TypeMeta, review.Request != nil
	}
	if decodeErr != nil {
		rv.fail(w, http.StatusBadRequest, fmt.Errorf("cannot decode the AdmissionReview: %w", decodeErr))
		return
	}
	// v1beta1 has v1's shape; the answer has the request's version.
	gvk := typeMeta.GroupVersionKind()
	if gvk != reviewV1 && gvk != reviewV1beta1 {
		rv.fail(w, http.StatusBadRequest, fmt.Errorf("the request is not an AdmissionReview of admission.k8s.io/v1 (or v1beta1): apiVersion %q, kind %q",
			typeMeta.APIVersion, typeMeta.Kind))
		return
	}
	if !hasRequest {
		rv.fail(w, http.StatusBadRequest, errors.New("the AdmissionReview has no request"))
		return
	}
	resp := rv.webhook.Handle(ctx, req)
	rv.write(w, gvk, &resp.AdmissionResponse)
}

func (rv *Reviews) fail(w http.ResponseWriter, code int32, err error) {
	rv.log.Error(err, "Bad admission request")
	resp := admission.Errored(code, err)
	rv.write(w, reviewV1, &resp.AdmissionResponse)
}

func (rv *Reviews) write(w http.ResponseWriter, gvk schema.GroupVersionKind, resp *admissionv1.AdmissionResponse) {
	out := admissionv1.AdmissionReview{Response: resp}
	out.SetGroupVersionKind(gvk)
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		// The connection failed; nothing more can be written to it.
		rv.log.Error(err, "Cannot write the admission response")
	}
}
