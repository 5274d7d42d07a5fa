package webhook

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// MutatePodPath is where the pod mutating webhook is served.
const MutatePodPath = "/mutate-v1-pod"

// PodMutator runs the engine's mutating policies on pod creations:
// host-network-endpoint, and kube-proxy-node-deleting for pods created
// already bound to a node that is being deleted.
//
// It is its own http.Handler rather than a typed Defaulter on purpose: it
// decodes the review and the part of the pod the Mutating rules read
// (policy.MutationPod) in one pass (serve.go), and emits only the JSON patch
// operations the policies ask for, instead of re-marshalling the whole pod
// and diffing it (PatchResponseFromRaw), which is both slower on this hot
// path and drops fields the Go type does not know.
type PodMutator struct {
	engine  *policy.Store // the engine in force
	cluster policy.Cluster
	metrics *metrics.Recorder
	// webhook computes the answer (panic recovery, the request's logger,
	// completing the response) with admit as its handler.
	webhook *admission.Webhook
	log     logr.Logger
}

var _ http.Handler = (*PodMutator)(nil)

// NewPodMutator returns the pod mutating webhook. cluster may be nil (rules
// that need cluster state, such as kube-proxy-node-deleting, give no
// verdict).
func NewPodMutator(engine *policy.Store, cluster policy.Cluster, rec *metrics.Recorder) (*PodMutator, error) {
	if engine == nil || rec == nil {
		return nil, fmt.Errorf("pod mutator needs an engine store and a metrics recorder")
	}
	m := &PodMutator{engine: engine, cluster: cluster, metrics: rec, log: logf.Log.WithName("admission")}
	m.webhook = &admission.Webhook{Handler: admission.HandlerFunc(m.admit)}
	return m, nil
}

// WithRecoverPanic sets whether a panic in the handler is answered with an
// error (the default) or propagated, for tests.
func (m *PodMutator) WithRecoverPanic(recoverPanic bool) *PodMutator {
	m.webhook.WithRecoverPanic(recoverPanic)
	return m
}

// admit answers req, whose object ServeHTTP decoded as a
// *policy.MutationPod (req.Object.Object).
func (m *PodMutator) admit(ctx context.Context, req admission.Request) admission.Response {
	if req.Resource != kinds.Pod.Resource || req.SubResource != "" {
		return admission.Errored(http.StatusBadRequest,
			fmt.Errorf("%s serves v1 pods, got resource %q subresource %q", MutatePodPath, req.Resource.String(), req.SubResource))
	}
	if req.Operation != admissionv1.Create {
		return admission.Allowed("")
	}
	mp, ok := req.Object.Object.(*policy.MutationPod)
	if !ok || mp == nil {
		return admission.Errored(http.StatusBadRequest, policy.ErrNoObject)
	}
	pod, err := mp.Pod()
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}

	engine := m.engine.Load()
	if len(engine.Exemptions()) > 0 {
		// A pod matches its workload's exemption.
		if pod.OwnerReferences, err = mp.Owners(); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
	}
	results := engine.EvaluateEffect(policy.Target{Object: pod, Cluster: m.cluster}, policy.Mutating)
	d := decide(policy.Verdicts(pod, results), m.metrics)
	if len(d.patch) > 0 {
		// The request's logger already names the pod, the user and the
		// request ID.
		logf.FromContext(ctx).Info("Mutating pod", "operations", len(d.patch), "annotations", d.annotations)
	}
	return d.response(annotationsOf(mp))
}

// annotationsOf says where mp's annotations are, which decides the shape of
// the annotation patch.
func annotationsOf(mp *policy.MutationPod) annotationsAt {
	switch {
	case mp.Metadata == nil:
		return noMetadata
	case mp.Metadata.Annotations == nil:
		return noAnnotations
	}
	return annotationsMap
}
