package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
	"github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

// The handler benchmarks of make bench (docs/performance.md). Each admission
// path runs on the realistic objects of internal/testing/fixtures, at two
// levels: Handle on a decoded request (the policy work), and the whole HTTP
// handler on the AdmissionReview bytes (plus decoding the review and encoding
// the response, as the API server's call costs us minus TLS). The generic
// path (decode the pod, mutate it, marshal it, PatchResponseFromRaw's
// whole-object diff) runs on the same pods, for the ratio.

type benchPod struct {
	name string
	pod  *corev1.Pod
	ops  int // patch operations our mutator answers with (one per env var added or replaced, plus the annotation)
}

func benchPods() []benchPod {
	return []benchPod{
		{"cilium-operator", fixtures.CiliumOperator(), 5},
		{"cilium-operator-pinned", fixtures.CiliumOperatorPinned(), 5},
		{"kube-apiserver-mirror", fixtures.APIServerMirrorPod(), 0}, // a mirror pod cannot be changed
		{"kube-proxy", fixtures.KubeProxy("node-ok"), 3},
		{"large-50x100", fixtures.LargePod(50, 100), 101},
	}
}

// genericMutator is how a webhook without hand-built patches does the same
// rewrite: decode, mutate the typed pod, marshal, diff.
type genericMutator struct{ decoder admission.Decoder }

func (g genericMutator) Handle(_ context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := g.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if pod.Spec.HostNetwork {
		if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; !mirror {
			fixtures.Rewrite(pod)
		}
	}
	marshaled, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, marshaled)
}

func newGenericMutator() admission.Handler {
	return genericMutator{decoder: admission.NewDecoder(clientgoscheme.Scheme)}
}

func newBenchMutator(b *testing.B) admission.Handler {
	b.Helper()
	engine, rec, _ := engineFor(b, "")
	m, err := webhook.NewPodMutator(engine, testCluster, rec)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func decodedRequest(b *testing.B, review []byte) admission.Request {
	b.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(review, &ar); err != nil {
		b.Fatal(err)
	}
	return admission.Request{AdmissionRequest: *ar.Request}
}

// serveReview posts review to h as the API server would, without TLS.
func serveReview(h http.Handler, review []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(review))
	req.Header.Set("Content-Type", "application/json")
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr
}

// BenchmarkPodMutator: our mutating webhook and the generic path, on the
// same pods. "handle" is the policy work on a decoded request; "http" is the
// whole handler on the AdmissionReview bytes.
func BenchmarkPodMutator(b *testing.B) {
	for _, bp := range benchPods() {
		review := fixtures.Review(bp.pod, "pods")
		for _, impl := range []struct {
			name    string
			handler admission.Handler
			ours    bool
		}{{"ours", newBenchMutator(b), true}, {"generic", newGenericMutator(), false}} {
			b.Run(bp.name+"/"+impl.name+"/handle", func(b *testing.B) {
				req := decodedRequest(b, review)
				b.SetBytes(int64(len(review)))
				b.ReportAllocs()
				for b.Loop() {
					resp := impl.handler.Handle(b.Context(), req)
					if !resp.Allowed || (impl.ours && len(resp.Patches) != bp.ops) {
						b.Fatalf("allowed %v, %d operations, want %d", resp.Allowed, len(resp.Patches), bp.ops)
					}
				}
			})
			b.Run(bp.name+"/"+impl.name+"/http", func(b *testing.B) {
				// Ours as the server serves it; the generic path as a
				// controller-runtime webhook is served.
				var h http.Handler = &admission.Webhook{Handler: impl.handler}
				if m, ok := impl.handler.(*webhook.PodMutator); ok {
					h = m
				}
				b.SetBytes(int64(len(review)))
				b.ReportAllocs()
				for b.Loop() {
					if rr := serveReview(h, review); rr.Code != http.StatusOK {
						b.Fatalf("HTTP %d: %s", rr.Code, rr.Body)
					}
				}
			})
		}
	}
}

// BenchmarkPodMutatorScaling runs our mutator on hostNetwork pods of growing
// containers × env vars; ns/env stays flat when no path is quadratic.
func BenchmarkPodMutatorScaling(b *testing.B) {
	m := newBenchMutator(b)
	for _, size := range [][2]int{{1, 10}, {10, 10}, {10, 100}, {50, 100}, {100, 100}} {
		containers, envs := size[0], size[1]
		b.Run(fmt.Sprintf("%dx%d", containers, envs), func(b *testing.B) {
			req := decodedRequest(b, fixtures.Review(fixtures.LargePod(containers, envs), "pods"))
			b.ReportAllocs()
			for b.Loop() {
				if resp := m.Handle(b.Context(), req); len(resp.Patches) != containers*2+1 {
					b.Fatalf("%d operations", len(resp.Patches))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(containers*envs), "ns/env")
		})
	}
}

// BenchmarkValidator: the validating paths, on the objects the API server
// sends them (matchConditions keep the others away).
func BenchmarkValidator(b *testing.B) {
	for _, bc := range []struct {
		name     string
		kinds    webhook.Kinds
		obj      runtime.Object
		resource string
		warnings int
	}{
		{"kube-apiserver-mirror", webhook.WorkloadKinds, fixtures.APIServerMirrorPod(), "pods", 3},
		{"kube-proxy", webhook.WorkloadKinds, fixtures.KubeProxy("node-ok"), "pods", 0},
		{"kubeadm-config", webhook.ConfigMapKinds, fixtures.KubeadmConfig(), "configmaps", 0},
	} {
		review := fixtures.Review(bc.obj, bc.resource)
		engine, rec, _ := engineFor(b, "")
		v, err := webhook.NewValidator("/validate", bc.kinds, engine, nil, rec, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name+"/handle", func(b *testing.B) {
			req := decodedRequest(b, review)
			b.SetBytes(int64(len(review)))
			b.ReportAllocs()
			for b.Loop() {
				if resp := v.Handle(b.Context(), req); resp.Result == nil {
					b.Fatal("no result")
				}
			}
		})
		b.Run(bc.name+"/http", func(b *testing.B) {
			h := &admission.Webhook{Handler: v}
			b.SetBytes(int64(len(review)))
			b.ReportAllocs()
			for b.Loop() {
				if rr := serveReview(h, review); rr.Code != http.StatusOK {
					b.Fatalf("HTTP %d: %s", rr.Code, rr.Body)
				}
			}
		})
	}
}

// BenchmarkPodMutatorNodes: the same pods in a cluster of 5,000 cached nodes
// whose node agents all verified the endpoint, or all but 50: the
// per-node decision of host-network-endpoint (verification: Required)
// evaluates a pod only against the nodes that did not, so the steady state
// costs what BenchmarkPodMutator does, whatever the cluster's size.
// cilium-operator is a Deployment's pod (no node yet, tolerates every
// taint: every node is a candidate); kube-proxy a DaemonSet's (one node,
// by node affinity).
func BenchmarkPodMutatorNodes(b *testing.B) {
	kubeProxy := fixtures.KubeProxy("")
	kubeProxy.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-00042"}}},
		}}},
	}}
	for _, c := range []struct {
		name       string
		unverified int
	}{{"5000-nodes-verified", 0}, {"5000-nodes-50-unverified", 50}} {
		cluster := largeCluster(b, 5000, c.unverified)
		engine, rec, _ := engineFor(b, "")
		m, err := webhook.NewPodMutator(engine, cluster, rec)
		if err != nil {
			b.Fatal(err)
		}
		for _, bp := range []benchPod{
			{"cilium-operator", fixtures.CiliumOperator(), 5},
			{"kube-proxy-daemonset", kubeProxy, 3},
		} {
			if c.unverified > 0 && bp.name == "cilium-operator" {
				bp.ops = 0 // its 50 unverified candidates keep it unchanged, with a warning
			}
			review := fixtures.Review(bp.pod, "pods")
			b.Run(bp.name+"/"+c.name+"/handle", func(b *testing.B) {
				req := decodedRequest(b, review)
				b.SetBytes(int64(len(review)))
				b.ReportAllocs()
				for b.Loop() {
					if resp := m.Handle(b.Context(), req); !resp.Allowed || len(resp.Patches) != bp.ops {
						b.Fatalf("allowed %v, %d operations, want %d: %v", resp.Allowed, len(resp.Patches), bp.ops, resp.Warnings)
					}
				}
			})
			b.Run(bp.name+"/"+c.name+"/http", func(b *testing.B) {
				b.SetBytes(int64(len(review)))
				b.ReportAllocs()
				for b.Loop() {
					if rr := serveReview(m, review); rr.Code != http.StatusOK {
						b.Fatalf("HTTP %d: %s", rr.Code, rr.Body)
					}
				}
			})
		}
	}
}
