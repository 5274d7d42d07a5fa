package webhook

import (
	"context"
	"fmt"
	"net/http"

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
// It is a raw admission.Handler rather than a typed Defaulter on purpose: it
// emits only the JSON patch operations the policies ask for, instead of
// re-marshalling the whole pod and diffing it (PatchResponseFromRaw), which is
// both slower on this hot path and drops fields the Go type does not know.
// It decodes only what the Mutating rules read (mutationPod); served by
// Reviews, in the same pass as the review.
type PodMutator struct {
	engine  *policy.Store // the engine in force
	cluster policy.Cluster
	metrics *metrics.Recorder
}

// NewPodMutator returns the pod mutating handler. cluster may be nil (rules
// that need cluster state, such as kube-proxy-node-deleting, give no
// verdict).
func NewPodMutator(engine *policy.Store, cluster policy.Cluster, rec *metrics.Recorder) (*PodMutator, error) {
	if engine == nil || rec == nil {
		return nil, fmt.Errorf("pod mutator needs an engine store and a metrics recorder")
	}
	return &PodMutator{engine: engine, cluster: cluster, metrics: rec}, nil
}

// Handle implements admission.Handler.
func (m *PodMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	return m.handle(ctx, req, func() (*mutationPod, error) { return decodeMutationPod(req.Object.Raw) })
}

// newObject and handleDecoded implement objectDecoder: Reviews decodes the
// pod with the review, in one pass.
func (m *PodMutator) newObject() any { return &mutationPod{} }

func (m *PodMutator) decoded(obj any) bool {
	mp, ok := obj.(*mutationPod)
	return ok && mp != nil && (mp.APIVersion != "" || mp.Kind != "" || mp.Metadata != nil ||
		mp.Spec.HostNetwork || mp.Spec.NodeName != "" || mp.Spec.InitContainers != nil || mp.Spec.Containers != nil)
}

func (m *PodMutator) handleDecoded(ctx context.Context, req admission.Request, obj any) admission.Response {
	return m.handle(ctx, req, func() (*mutationPod, error) {
		mp, ok := obj.(*mutationPod)
		if !ok || mp == nil {
			return nil, errNoObject
		}
		return mp, nil
	})
}

func (m *PodMutator) handle(ctx context.Context, req admission.Request, decode func() (*mutationPod, error)) admission.Response {
	if req.Resource != kinds.Pod.Resource || req.SubResource != "" {
		return admission.Errored(http.StatusBadRequest,
			fmt.Errorf("%s serves v1 pods, got resource %q subresource %q", MutatePodPath, req.Resource.String(), req.SubResource))
	}
	if req.Operation != admissionv1.Create {
		return admission.Allowed("")
	}
	mp, err := decode()
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	pod, at, err := mp.pod()
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}

	results := m.engine.Load().EvaluateEffect(policy.Target{Object: pod, Cluster: m.cluster}, policy.Mutating)
	d := decide(policy.Verdicts(pod, results), m.metrics)
	if len(d.patch) > 0 {
		// The request's logger already names the pod, the user and the
		// request ID.
		logf.FromContext(ctx).Info("Mutating pod", "operations", len(d.patch), "annotations", d.annotations)
	}
	return d.response(at)
}
