package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// review wraps an object in an AdmissionReview request for pods.
func review(operation, resource, object string) string {
	return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
		"uid":"7c4e2f6a-0000-4000-8000-000000000001",
		"kind":{"group":"","version":"v1","kind":"Pod"},
		"resource":{"group":"","version":"v1","resource":"` + resource + `"},
		"namespace":"kube-system","operation":"` + operation + `",
		"userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},
		"object":` + object + `}}`
}

const pinnedPod = `{"apiVersion":"v1","kind":"Pod",
	"metadata":{"name":"cilium-operator-1","namespace":"kube-system","labels":{"app":"cilium-operator"}},
	"spec":{"hostNetwork":true,"containers":[{"name":"operator","image":"quay.io/cilium/operator:v1.16.0",
		"env":[{"name":"KUBERNETES_SERVICE_HOST","value":"10.0.1.16"},{"name":"KUBERNETES_SERVICE_PORT","value":"6443"}]}]}}`

type harness struct {
	handler http.Handler
	reg     *prometheus.Registry
}

// engineFor returns the engine store for a configuration file body (after
// apiVersion and kind), and a metrics recorder on a fresh registry.
func engineFor(t testing.TB, cfgYAML string) (*policy.Store, *metrics.Recorder, *prometheus.Registry) {
	t.Helper()
	cfg, err := config.Parse([]byte("apiVersion: endpoint-policy.io/v1alpha1\nkind: PolicyConfiguration\n" + cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	engine, err := cfg.Engine()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rec, err := metrics.NewRecorder(reg)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewStore(engine), rec, reg
}

// nodes is a policy.Cluster that knows some nodes.
type nodes map[string]*corev1.Node

func (n nodes) Node(name string) (*corev1.Node, bool) { node, ok := n[name]; return node, ok }

func (nodes) APIServerPods() ([]*corev1.Pod, bool) { return nil, true }

// testCluster has a healthy node and one that cluster-autoscaler is about to
// delete, and their node agents verified localhost:7443 on both.
var testCluster = verifiedCluster(nodes{
	"node-ok": {ObjectMeta: metav1.ObjectMeta{Name: "node-ok", Labels: map[string]string{corev1.LabelOSStable: "linux"}}},
	"node-going": {ObjectMeta: metav1.ObjectMeta{Name: "node-going", Labels: map[string]string{corev1.LabelOSStable: "linux"}}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
		{Key: kubeproxy.ToBeDeletedTaint, Value: "1795420800", Effect: corev1.TaintEffectNoSchedule}}}},
}, "localhost:7443")

func newHarness(t *testing.T, cfgYAML string) *harness {
	t.Helper()
	engine, rec, reg := engineFor(t, cfgYAML)
	m, err := webhook.NewPodMutator(engine, testCluster, rec)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{handler: m, reg: reg}
}

// call posts body as the API server would and returns the response.
func (h *harness) call(t *testing.T, body string) *admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, webhook.MutatePodPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rr := httptest.NewRecorder()
	h.handler.ServeHTTP(rr, req)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rr.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not an AdmissionReview (HTTP %d): %s", rr.Code, rr.Body)
	}
	if out.Response == nil {
		t.Fatalf("AdmissionReview without response: %s", rr.Body)
	}
	return out.Response
}

func (h *harness) decisions(policyID, action string) float64 {
	return webhook.DecisionCount(h.reg, policyID, action)
}

type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func patchOps(t *testing.T, resp *admissionv1.AdmissionResponse) []op {
	t.Helper()
	if len(resp.Patch) == 0 {
		return nil
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	var ops []op
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	return ops
}

func applyPatch(t *testing.T, object string, resp *admissionv1.AdmissionResponse) map[string]any {
	t.Helper()
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply([]byte(object))
	if err != nil {
		t.Fatalf("patch %s does not apply: %v", resp.Patch, err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPodMutatorPatches(t *testing.T) {
	h := newHarness(t, "")
	tests := []struct {
		name    string
		object  string
		wantOps []op
	}{
		{
			name:   "pinned IP: two replaces and the annotations map",
			object: pinnedPod,
			wantOps: []op{
				{"replace", "/spec/containers/0/env/0", map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": "localhost"}},
				{"replace", "/spec/containers/0/env/1", map[string]any{"name": "KUBERNETES_SERVICE_PORT", "value": "7443"}},
				{"add", "/metadata/annotations", map[string]any{"endpoint-policy.io/endpoint": "localhost:7443"}},
			},
		},
		{
			name: "no env, existing annotations: one add for env, one for the key",
			object: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"b"}},
				"spec":{"hostNetwork":true,"initContainers":[{"name":"i","image":"x"}],"containers":[{"name":"c","image":"x","env":[{"name":"A","value":"1"}]}]}}`,
			wantOps: []op{
				{"add", "/spec/initContainers/0/env", []any{
					map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": "localhost"},
					map[string]any{"name": "KUBERNETES_SERVICE_PORT", "value": "7443"}}},
				{"add", "/spec/containers/0/env/-", map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": "localhost"}},
				{"add", "/spec/containers/0/env/-", map[string]any{"name": "KUBERNETES_SERVICE_PORT", "value": "7443"}},
				{"add", "/metadata/annotations/endpoint-policy.io~1endpoint", "localhost:7443"},
			},
		},
		{
			name: "already pointed at the balancer: no patch",
			object: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"hostNetwork":true,"containers":[{"name":"c","image":"x",
				"env":[{"name":"KUBERNETES_SERVICE_HOST","value":"localhost"},{"name":"KUBERNETES_SERVICE_PORT","value":"7443"}]}]}}`,
		},
		{
			name:   "DNS name: no patch",
			object: strings.Replace(pinnedPod, "10.0.1.16", "api.example.com", 1),
		},
		{
			name:   "pod network: no patch",
			object: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x"}]}}`,
		},
		{
			name:   "mirror pod: no patch",
			object: strings.Replace(pinnedPod, `"labels"`, `"annotations":{"kubernetes.io/config.mirror":"x"},"labels"`, 1),
		},
		{
			name:   "excluded by label: no patch",
			object: strings.Replace(pinnedPod, `"app":"cilium-operator"`, `"endpoint-policy.io/exclude":"true"`, 1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.call(t, review("CREATE", "pods", tt.object))
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if diff := cmp.Diff(tt.wantOps, patchOps(t, resp)); diff != "" {
				t.Fatalf("patch (-want +got):\n%s", diff)
			}
			if len(resp.Warnings) != 0 {
				t.Errorf("unexpected warnings %v", resp.Warnings)
			}
			if tt.wantOps == nil {
				return
			}
			// Idempotent under reinvocation: the patched pod yields no patch.
			patched, _ := json.Marshal(applyPatch(t, tt.object, resp))
			if again := patchOps(t, h.call(t, review("CREATE", "pods", string(patched)))); again != nil {
				t.Errorf("second pass patched again: %v", again)
			}
		})
	}
}

func TestPodMutatorKeepsUnknownFields(t *testing.T) {
	h := newHarness(t, "")
	object := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","futureMeta":{"x":1}},
		"spec":{"hostNetwork":true,"futureSpec":"keep","containers":[{"name":"c","image":"x","futureContainer":[1,2],
		"env":[{"name":"KUBERNETES_SERVICE_HOST","value":"10.0.1.16","futureEnv":true}]}]}}`
	resp := h.call(t, review("CREATE", "pods", object))
	got := applyPatch(t, object, resp)
	spec := got["spec"].(map[string]any)
	container := spec["containers"].([]any)[0].(map[string]any)
	if spec["futureSpec"] != "keep" || container["futureContainer"] == nil || got["metadata"].(map[string]any)["futureMeta"] == nil {
		t.Fatalf("unknown fields dropped: %v", got)
	}
	wantEnv := []any{
		map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": "localhost"},
		map[string]any{"name": "KUBERNETES_SERVICE_PORT", "value": "7443"},
	}
	if diff := cmp.Diff(wantEnv, container["env"]); diff != "" {
		t.Fatalf("env (-want +got):\n%s", diff)
	}
}

func TestPodMutatorAuditMode(t *testing.T) {
	for _, cfg := range []string{"mode: Audit\n", "policies:\n  host-network-endpoint:\n    mode: Audit\n"} {
		t.Run(strings.TrimSpace(cfg), func(t *testing.T) {
			h := newHarness(t, cfg)
			resp := h.call(t, review("CREATE", "pods", pinnedPod))
			if !resp.Allowed || len(resp.Patch) != 0 {
				t.Fatalf("audit mode must allow without patch: allowed=%v patch=%s", resp.Allowed, resp.Patch)
			}
			want := `[host-network-endpoint] would set KUBERNETES_SERVICE_HOST=localhost (was "10.0.1.16"), KUBERNETES_SERVICE_PORT=7443 (was "6443") in container "operator"`
			if diff := cmp.Diff([]string{want}, resp.Warnings); diff != "" {
				t.Fatalf("warnings (-want +got):\n%s", diff)
			}
			if got := resp.AuditAnnotations["host-network-endpoint"]; got != want {
				t.Fatalf("audit annotation = %q, want %q", got, want)
			}
			if got := h.decisions("host-network-endpoint", "warn"); got != 1 {
				t.Fatalf("warn decisions = %v, want 1", got)
			}
		})
	}
}

func TestPodMutatorWarningsAreBounded(t *testing.T) {
	h := newHarness(t, "mode: Audit\n")
	var containers []string
	for range 50 {
		containers = append(containers, `{"name":"c","image":"x"}`)
	}
	object := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"hostNetwork":true,"containers":[` + strings.Join(containers, ",") + `]}}`
	resp := h.call(t, review("CREATE", "pods", object))
	if len(resp.Warnings) != 11 || resp.Warnings[10] != "[host-network-endpoint] ... and 40 more" {
		t.Fatalf("want 10 warnings and a summary, got %d: last %q", len(resp.Warnings), resp.Warnings[len(resp.Warnings)-1])
	}
}

func TestPodMutatorMetrics(t *testing.T) {
	h := newHarness(t, "")
	h.call(t, review("CREATE", "pods", pinnedPod))
	h.call(t, review("CREATE", "pods", strings.Replace(pinnedPod, "10.0.1.16", "localhost", 1)))
	h.call(t, review("CREATE", "pods", strings.Replace(pinnedPod, "10.0.1.16", "localhost", 1)))
	h.call(t, review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[]}}`))
	if got := h.decisions("host-network-endpoint", "mutate"); got != 1 {
		t.Errorf("mutate = %v, want 1", got)
	}
	// localhost with 6443 is the user's choice (allow); the pod-network pod
	// is not the policy's business (not counted).
	if got := h.decisions("host-network-endpoint", "allow"); got != 2 {
		t.Errorf("allow = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(h.reg, "endpoint_policy_admission_decisions_total"); err != nil || n != 2 {
		t.Errorf("decision series = %d (%v), want 2", n, err)
	}
}

func TestPodMutatorDisabled(t *testing.T) {
	h := newHarness(t, "policies:\n  host-network-endpoint:\n    mode: Disabled\n")
	resp := h.call(t, review("CREATE", "pods", pinnedPod))
	if !resp.Allowed || len(resp.Patch) != 0 || len(resp.Warnings) != 0 {
		t.Fatalf("disabled policy acted: %+v", resp)
	}
	if n, _ := testutil.GatherAndCount(h.reg, "endpoint_policy_admission_decisions_total"); n != 0 {
		t.Fatalf("disabled policy counted %d decisions", n)
	}
}

func TestPodMutatorBadInput(t *testing.T) {
	h := newHarness(t, "")
	tests := []struct {
		name     string
		body     string
		wantCode int32
		wantMsg  string
	}{
		{name: "not a pod resource", body: review("CREATE", "configmaps", `{"apiVersion":"v1","kind":"ConfigMap"}`),
			wantCode: http.StatusBadRequest, wantMsg: `serves v1 pods, got resource "/v1, Resource=configmaps"`},
		{name: "a ConfigMap sent as a pod", body: review("CREATE", "pods", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}`),
			wantCode: http.StatusBadRequest, wantMsg: "object is a v1 ConfigMap, not a v1 Pod"},
		{name: "object of the wrong shape", body: review("CREATE", "pods", `{"apiVersion":"v1","kind":"Pod","spec":{"containers":"many"}}`),
			wantCode: http.StatusBadRequest, wantMsg: "request.object.spec.containers"},
		{name: "no object", body: review("CREATE", "pods", `null`),
			wantCode: http.StatusBadRequest, wantMsg: "admission request has no object"},
		{name: "not JSON", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":`,
			wantCode: http.StatusBadRequest},
		{name: "empty body", body: ``, wantCode: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.call(t, tt.body)
			if resp.Allowed {
				t.Fatal("bad input allowed")
			}
			if resp.Result == nil || resp.Result.Code != tt.wantCode || !strings.Contains(resp.Result.Message, tt.wantMsg) {
				t.Fatalf("result = %+v, want code %d and message containing %q", resp.Result, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestPodMutatorIgnoresOtherOperations(t *testing.T) {
	h := newHarness(t, "")
	resp := h.call(t, review("UPDATE", "pods", pinnedPod))
	if !resp.Allowed || len(resp.Patch) != 0 {
		t.Fatalf("UPDATE: allowed=%v patch=%s", resp.Allowed, resp.Patch)
	}
}

// Guard against accidental reuse of patch slices between requests.
func TestPodMutatorConcurrent(t *testing.T) {
	h := newHarness(t, "")
	want := h.call(t, review("CREATE", "pods", pinnedPod)).Patch
	done := make(chan []byte)
	for range 8 {
		go func() {
			req := httptest.NewRequest(http.MethodPost, webhook.MutatePodPath, strings.NewReader(review("CREATE", "pods", pinnedPod)))
			req.Header.Set("Content-Type", "application/json")
			rr := httptest.NewRecorder()
			h.handler.ServeHTTP(rr, req)
			var out admissionv1.AdmissionReview
			_ = json.Unmarshal(rr.Body.Bytes(), &out)
			if out.Response == nil {
				done <- nil
				return
			}
			done <- out.Response.Patch
		}()
	}
	for range 8 {
		if got := <-done; !bytes.Equal(got, want) {
			t.Fatalf("concurrent patch %s, want %s", got, want)
		}
	}
}

// kube-proxy pods created already bound to a node being deleted (static
// kube-proxy's mirror pod, pods created with nodeName) are annotated at
// admission; the controller does the rest.
func TestPodMutatorKubeProxy(t *testing.T) {
	const since = "2026-11-23T08:00:00Z" // the taint's value, 1795420800
	staticPod := func(node, annotations string) string {
		return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kube-proxy-` + node + `","namespace":"kube-system",
			"labels":{"component":"kube-proxy"},"annotations":{"kubernetes.io/config.mirror":"abc"` + annotations + `}},
			"spec":{"nodeName":"` + node + `","hostNetwork":true,"containers":[{"name":"kube-proxy","image":"registry.k8s.io/kube-proxy:v1.37.2"}]}}`
	}
	const daemonSetPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"kube-proxy-","namespace":"kube-system",
		"labels":{"k8s-app":"kube-proxy"}},
		"spec":{"hostNetwork":true,"containers":[{"name":"kube-proxy","image":"registry.k8s.io/kube-proxy:v1.37.2",
			"env":[{"name":"KUBERNETES_SERVICE_HOST","value":"localhost"},{"name":"KUBERNETES_SERVICE_PORT","value":"7443"}]}]}}`
	stale := `,"` + kubeproxy.NodeDeletingAnnotation + `":"ToBeDeletedByClusterAutoscaler","` + kubeproxy.NodeDeletingSinceAnnotation + `":"` + since + `"`
	tests := []struct {
		name         string
		config       string
		object       string
		wantOps      []op
		wantWarnings []string
		wantAction   string
	}{
		{name: "mirror pod on a node being deleted: annotated", object: staticPod("node-going", ""), wantAction: "mutate",
			wantOps: []op{
				{Op: "add", Path: "/metadata/annotations/endpoint-policy.io~1node-deleting", Value: "ToBeDeletedByClusterAutoscaler"},
				{Op: "add", Path: "/metadata/annotations/endpoint-policy.io~1node-deleting-since", Value: since},
			}},
		{name: "mirror pod with stale annotations on a healthy node: removed", object: staticPod("node-ok", stale), wantAction: "mutate",
			wantOps: []op{
				{Op: "remove", Path: "/metadata/annotations/endpoint-policy.io~1node-deleting"},
				{Op: "remove", Path: "/metadata/annotations/endpoint-policy.io~1node-deleting-since"},
			}},
		{name: "mirror pod on a healthy node", object: staticPod("node-ok", ""), wantAction: "allow"},
		{name: "node not known yet: no verdict", object: staticPod("node-new", "")},
		{name: "DaemonSet pod, not yet bound: left to the controller", object: daemonSetPod},
		{name: "Audit: a warning, no patch", config: "policies:\n  kube-proxy-node-deleting:\n    mode: Audit\n",
			object: staticPod("node-going", ""), wantAction: "warn",
			wantWarnings: []string{"[kube-proxy-node-deleting] would annotate endpoint-policy.io/node-deleting=ToBeDeletedByClusterAutoscaler, " +
				"endpoint-policy.io/node-deleting-since=" + since + `: node "node-going" is being deleted, and kube-proxy fails /healthz ` +
				"there on purpose since Kubernetes v1.30 (KEP-3836), so this pod being unready is expected"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.config)
			resp := h.call(t, review("CREATE", "pods", tt.object))
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if diff := cmp.Diff(tt.wantOps, patchOps(t, resp)); diff != "" {
				t.Errorf("patch (-want +got):\n%s", diff)
			}
			if len(tt.wantOps) > 0 {
				applyPatch(t, tt.object, resp)
			}
			if diff := cmp.Diff(tt.wantWarnings, resp.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			for _, action := range []string{"mutate", "warn", "allow"} {
				want := 0.0
				if action == tt.wantAction {
					want = 1
				}
				if got := h.decisions(string(kubeproxy.NodeDeletingID), action); got != want {
					t.Errorf("decisions{%s} = %v, want %v", action, got, want)
				}
			}
		})
	}
}
