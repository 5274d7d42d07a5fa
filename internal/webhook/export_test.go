package webhook

import (
	"context"
	"fmt"
	"net/http"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

// DecisionCount reads endpoint_policy_admission_decisions_total{policy,action}
// from reg; 0 when the series does not exist.
func DecisionCount(reg prometheus.Gatherer, policyID, action string) float64 {
	v, _ := metricstest.Value(reg, "endpoint_policy_admission_decisions_total", map[string]string{"policy": policyID, "action": action})
	return v
}

// MutatingDecodingsAgree runs the Mutating rules of engine on raw, a pod's
// JSON, decoded whole (kinds.Pod, as the audit and the CLI decode) and as
// the pod mutator decodes it, and returns how the results differ; "" when
// they agree or when the whole pod does not decode (the mutator may then
// still answer, from the fields it reads).
func MutatingDecodingsAgree(store *policy.Store, cluster policy.Cluster, raw []byte) string {
	whole, err := kinds.Pod.Decode(raw)
	if err != nil {
		return ""
	}
	mp, err := policy.DecodeMutationPod(raw)
	if err != nil {
		return fmt.Sprintf("the whole pod decodes, the mutation pod does not: %v", err)
	}
	slim, err := mp.Pod()
	if err != nil {
		return fmt.Sprintf("the whole pod decodes, the mutation pod is refused: %v", err)
	}
	engine := store.Load()
	want := engine.EvaluateEffect(policy.Target{Object: whole, Cluster: cluster}, policy.Mutating)
	got := engine.EvaluateEffect(policy.Target{Object: slim, Cluster: cluster}, policy.Mutating)
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("mutation pod: %+v\nwhole pod: %+v", got, want)
	}
	return ""
}

// Handle answers a request whose object is still raw, as an
// admission.Handler would be called: the "handle" benchmarks' policy work
// (decoding the object, the rules, the response) without the HTTP layer.
func (m *PodMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	mp, err := policy.DecodeMutationPod(req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	req.Object.Object = mp
	return m.admit(ctx, req)
}
