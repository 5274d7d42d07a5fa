package webhook_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// validationReview is an AdmissionReview request as the API server sends it
// to a validating webhook (the object already has its UID).
type validationReview struct {
	operation string
	resource  string // "group/version/resource"
	object    string
	oldObject string
	dryRun    bool
}

func (r validationReview) String() string {
	gvr := strings.Split(r.resource, "/")
	s := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
		"uid":"7c4e2f6a-0000-4000-8000-000000000002",
		"resource":{"group":"` + gvr[0] + `","version":"` + gvr[1] + `","resource":"` + gvr[2] + `"},
		"namespace":"kube-system","operation":"` + r.operation + `",
		"userInfo":{"username":"system:node:cp1"}`
	if r.object != "" {
		s += `,"object":` + r.object
	}
	if r.oldObject != "" {
		s += `,"oldObject":` + r.oldObject
	}
	if r.dryRun {
		s += `,"dryRun":true`
	}
	return s + "}}"
}

const (
	kubeadmConfigShared = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kubeadm-config","namespace":"kube-system","uid":"u1"},
		"data":{"ClusterConfiguration":"apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n    advertise-address: 10.0.0.11\n"}}`
	kubeadmConfigClean = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kubeadm-config","namespace":"kube-system","uid":"u1"},
		"data":{"ClusterConfiguration":"apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"}}`
	apiServerMirrorPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kube-apiserver-cp1","namespace":"kube-system","uid":"u2",
		"annotations":{"kubernetes.io/config.mirror":"abc"},"labels":{"component":"kube-apiserver"}},
		"spec":{"hostNetwork":true,"nodeName":"cp1","containers":[{"name":"kube-apiserver","image":"registry.k8s.io/kube-apiserver:v1.37.2",
		"command":["kube-apiserver","--advertise-address=192.168.1.10"],
		"livenessProbe":{"httpGet":{"host":"192.168.1.10","path":"/livez","port":6443,"scheme":"HTTPS"}}}]}}`
)

func kubeVIPDeployment(tag string, replicas int) string {
	return `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"kube-vip","namespace":"kube-system","uid":"u3"},
		"spec":{"replicas":` + strconv.Itoa(replicas) + `,"selector":{"matchLabels":{"app":"kube-vip"}},"template":{"metadata":{"labels":{"app":"kube-vip"}},
		"spec":{"containers":[{"name":"kube-vip","image":"ghcr.io/kube-vip/kube-vip:` + tag + `",
		"env":[{"name":"cp_enable","value":"true"},{"name":"lb_enable","value":"true"}]}]}}}}`
}

type validatorHarness struct {
	handler http.Handler
	reg     *prometheus.Registry
	events  *events.FakeRecorder
}

func newValidatorHarness(t *testing.T, kinds webhook.Kinds, cfgYAML string) *validatorHarness {
	t.Helper()
	engine, rec, reg := engineFor(t, cfgYAML)
	ev := events.NewFakeRecorder(10)
	v, err := webhook.NewValidator("/validate", kinds, engine, nil, rec, ev)
	if err != nil {
		t.Fatal(err)
	}
	return &validatorHarness{handler: &admission.Webhook{Handler: v}, reg: reg, events: ev}
}

func (h *validatorHarness) call(t *testing.T, r validationReview) *admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/validate", strings.NewReader(r.String()))
	req.Header.Set("Content-Type", "application/json")
	rr := httptest.NewRecorder()
	h.handler.ServeHTTP(rr, req)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rr.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("response is not an AdmissionReview (HTTP %d, %v): %s", rr.Code, err, rr.Body)
	}
	return out.Response
}

func TestValidator(t *testing.T) {
	const probeEnforce = "policies:\n  apiserver-probe-host:\n    mode: Enforce\n"
	tests := []struct {
		name         string
		kinds        webhook.Kinds
		config       string
		review       validationReview
		wantAllowed  bool
		wantCode     int32
		wantMessage  string
		wantWarnings []string
		wantEvents   int
		wantDecision [3]string // policy, action, "" for none counted
	}{
		{
			name:     "kubeadm-config with advertise-address is denied",
			kinds:    webhook.ConfigMapKinds,
			review:   validationReview{operation: "CREATE", resource: "/v1/configmaps", object: kubeadmConfigShared},
			wantCode: http.StatusForbidden, wantMessage: "[apiserver-advertise-address] data[ClusterConfiguration].apiServer.extraArgs[advertise-address]: advertise-address=10.0.0.11",
			wantDecision: [3]string{"apiserver-advertise-address", "deny"},
		},
		{
			name:        "kubeadm-config without it is allowed",
			kinds:       webhook.ConfigMapKinds,
			review:      validationReview{operation: "UPDATE", resource: "/v1/configmaps", object: kubeadmConfigClean, oldObject: kubeadmConfigShared},
			wantAllowed: true, wantDecision: [3]string{"apiserver-advertise-address", "allow"},
		},
		{
			name:        "an update that leaves the data as it was is not evaluated",
			kinds:       webhook.ConfigMapKinds,
			review:      validationReview{operation: "UPDATE", resource: "/v1/configmaps", object: kubeadmConfigShared, oldObject: kubeadmConfigShared},
			wantAllowed: true,
		},
		{
			name:     "kube-vip Deployment denied",
			kinds:    webhook.WorkloadKinds,
			review:   validationReview{operation: "CREATE", resource: "apps/v1/deployments", object: kubeVIPDeployment("v0.8.4", 1)},
			wantCode: http.StatusForbidden, wantMessage: "[kube-vip-ipvs-backends] spec.template.spec.containers[0].image: kube-vip v0.8.4",
			wantDecision: [3]string{"kube-vip-ipvs-backends", "deny"},
		},
		{
			name:  "scaling a violating Deployment is not evaluated",
			kinds: webhook.WorkloadKinds,
			review: validationReview{operation: "UPDATE", resource: "apps/v1/deployments",
				object: kubeVIPDeployment("v0.8.4", 2), oldObject: kubeVIPDeployment("v0.8.4", 1)},
			wantAllowed: true,
		},
		{
			name:  "changing the template is",
			kinds: webhook.WorkloadKinds,
			review: validationReview{operation: "UPDATE", resource: "apps/v1/deployments",
				object: kubeVIPDeployment("v0.8.5", 1), oldObject: kubeVIPDeployment("v0.8.10", 1)},
			wantCode: http.StatusForbidden, wantMessage: "kube-vip v0.8.5",
		},
		{
			name:        "a mirror pod is never denied: warnings, an Event, a warn decision",
			kinds:       webhook.WorkloadKinds,
			config:      probeEnforce,
			review:      validationReview{operation: "CREATE", resource: "/v1/pods", object: apiServerMirrorPod},
			wantAllowed: true, wantEvents: 1,
			wantWarnings: []string{"[apiserver-probe-host] spec.containers[0].livenessProbe.httpGet.host: the livenessProbe of container \"kube-apiserver\" targets the IP 192.168.1.10"},
			wantDecision: [3]string{"apiserver-probe-host", "warn"},
		},
		{
			name:        "no Event on a dry run",
			kinds:       webhook.WorkloadKinds,
			config:      probeEnforce,
			review:      validationReview{operation: "CREATE", resource: "/v1/pods", object: apiServerMirrorPod, dryRun: true},
			wantAllowed: true, wantWarnings: []string{"[apiserver-probe-host] spec.containers[0].livenessProbe.httpGet.host"},
		},
		{
			name:        "Audit warns without an Event (the client sees the warning)",
			kinds:       webhook.WorkloadKinds,
			config:      "mode: Audit\n",
			review:      validationReview{operation: "CREATE", resource: "apps/v1/deployments", object: kubeVIPDeployment("v0.8.4", 1)},
			wantAllowed: true, wantWarnings: []string{"[kube-vip-ipvs-backends] spec.template.spec.containers[0].image"},
			wantDecision: [3]string{"kube-vip-ipvs-backends", "warn"},
		},
		{
			name:        "DELETE is allowed",
			kinds:       webhook.WorkloadKinds,
			review:      validationReview{operation: "DELETE", resource: "apps/v1/deployments", oldObject: kubeVIPDeployment("v0.8.4", 1)},
			wantAllowed: true,
		},
		{
			name:     "a resource the path does not serve",
			kinds:    webhook.ConfigMapKinds,
			review:   validationReview{operation: "CREATE", resource: "apps/v1/deployments", object: kubeVIPDeployment("v0.8.4", 1)},
			wantCode: http.StatusBadRequest, wantMessage: `does not serve resource "apps/v1, Resource=deployments"`,
		},
		{
			name:     "an object of the wrong kind",
			kinds:    webhook.WorkloadKinds,
			review:   validationReview{operation: "CREATE", resource: "apps/v1/daemonsets", object: kubeVIPDeployment("v0.8.4", 1)},
			wantCode: http.StatusBadRequest, wantMessage: "object is a apps/v1 Deployment, not a apps/v1 DaemonSet",
		},
		{
			name:     "no object",
			kinds:    webhook.WorkloadKinds,
			review:   validationReview{operation: "CREATE", resource: "/v1/pods"},
			wantCode: http.StatusBadRequest, wantMessage: "admission request has no object",
		},
		{
			name:     "a field of the wrong type",
			kinds:    webhook.WorkloadKinds,
			review:   validationReview{operation: "CREATE", resource: "/v1/pods", object: `{"apiVersion":"v1","kind":"Pod","spec":{"containers":"x"}}`},
			wantCode: http.StatusBadRequest, wantMessage: "cannot decode object as a v1 Pod",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newValidatorHarness(t, tt.kinds, tt.config)
			resp := h.call(t, tt.review)
			if resp.Allowed != tt.wantAllowed {
				t.Errorf("allowed = %v, want %v (result %+v)", resp.Allowed, tt.wantAllowed, resp.Result)
			}
			if !tt.wantAllowed {
				if resp.Result == nil || resp.Result.Code != tt.wantCode || !strings.Contains(resp.Result.Message, tt.wantMessage) {
					t.Errorf("result = %+v, want code %d with %q", resp.Result, tt.wantCode, tt.wantMessage)
				}
			}
			if len(resp.Patch) != 0 {
				t.Errorf("a validating webhook returned a patch: %s", resp.Patch)
			}
			if len(resp.Warnings) != len(tt.wantWarnings) {
				t.Errorf("warnings = %q, want %d", resp.Warnings, len(tt.wantWarnings))
			}
			for i, w := range tt.wantWarnings {
				if i < len(resp.Warnings) && !strings.HasPrefix(resp.Warnings[i], w) {
					t.Errorf("warning %d = %q, want prefix %q", i, resp.Warnings[i], w)
				}
			}
			if got := len(h.events.Events); got != tt.wantEvents {
				t.Errorf("%d events, want %d", got, tt.wantEvents)
			}
			if tt.wantEvents > 0 {
				if e := <-h.events.Events; !strings.Contains(e, "Warning PolicyViolation [apiserver-probe-host]") {
					t.Errorf("event = %q", e)
				}
			}
			if p := tt.wantDecision; p[0] != "" {
				if got := webhook.DecisionCount(h.reg, p[0], p[1]); got != 1 {
					t.Errorf("decisions{policy=%s,action=%s} = %v, want 1", p[0], p[1], got)
				}
			}
		})
	}
}

func TestPodMutatorLeavesValidationToTheValidator(t *testing.T) {
	h := newHarness(t, "policies:\n  apiserver-probe-host:\n    mode: Enforce\n")
	resp := h.call(t, review("CREATE", "pods", apiServerMirrorPod))
	if !resp.Allowed || len(resp.Warnings) != 0 {
		t.Errorf("the mutating webhook ran a validating policy: %+v", resp)
	}
}
