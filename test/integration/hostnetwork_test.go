package integration

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

const (
	envHost            = "KUBERNETES_SERVICE_HOST"
	envPort            = "KUBERNETES_SERVICE_PORT"
	endpointAnnotation = "endpoint-policy.io/endpoint"
)

func envVars(kv ...string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for i := 0; i < len(kv); i += 2 {
		out = append(out, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func pod(namespace string, hostNetwork bool, env []corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: namespace},
		Spec: corev1.PodSpec{
			HostNetwork: hostNetwork,
			Containers:  []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10", Env: env}},
		},
	}
}

// recreate returns a copy of p, as returned by the API server, ready to be
// created again under a new name.
func recreate(p *corev1.Pod) *corev1.Pod {
	c := p.DeepCopy()
	c.ObjectMeta = metav1.ObjectMeta{GenerateName: "again-", Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations}
	c.Status = corev1.PodStatus{}
	return c
}

var _ = Describe("host-network-endpoint", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx, nil) })

	It("rewrites a pinned control-plane IP to the local balancer, and a second create changes nothing", func(ctx context.Context) {
		p := pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "localhost", envPort, "7443")))
		Expect(p.Annotations).To(HaveKeyWithValue(endpointAnnotation, "localhost:7443"))

		again := recreate(p)
		Expect(k8s.Create(ctx, again)).To(Succeed())
		Expect(again.Spec.Containers).To(Equal(p.Spec.Containers))
		Expect(again.Annotations).To(Equal(p.Annotations))
	})

	It("rewrites a pinned IPv6 address", func(ctx context.Context) {
		p := pod(ns, true, envVars(envHost, "fd00:10::16", envPort, "6443"))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "localhost", envPort, "7443")))
	})

	It("adds both variables to containers and init containers without env", func(ctx context.Context) {
		p := pod(ns, true, nil)
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "registry.k8s.io/pause:3.10"}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "other", Image: "registry.k8s.io/pause:3.10",
			Env: envVars("LOG_LEVEL", "debug")})
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.InitContainers[0].Env).To(Equal(envVars(envHost, "localhost", envPort, "7443")))
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "localhost", envPort, "7443")))
		Expect(p.Spec.Containers[1].Env).To(Equal(envVars("LOG_LEVEL", "debug", envHost, "localhost", envPort, "7443")))
	})

	It("keeps a DNS name and its port", func(ctx context.Context) {
		p := pod(ns, true, envVars(envHost, "api.cluster.example.com", envPort, "6443"))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "api.cluster.example.com", envPort, "6443")))
		Expect(p.Annotations).NotTo(HaveKey(endpointAnnotation))
	})

	It("rewrites the port of a pod that sets only the port", func(ctx context.Context) {
		p := pod(ns, true, envVars(envPort, "6443"))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(ConsistOf(envVars(envHost, "localhost", envPort, "7443")))
	})

	It("leaves pods on the pod network alone", func(ctx context.Context) {
		p := pod(ns, false, envVars(envHost, "10.0.1.16", envPort, "6443"))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")))
		Expect(p.Annotations).NotTo(HaveKey(endpointAnnotation))
	})

	It("leaves pods labelled endpoint-policy.io/exclude=true alone", func(ctx context.Context) {
		p := pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
		p.Labels = map[string]string{"endpoint-policy.io/exclude": "true"}
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")))
	})

	It("leaves pods in namespaces labelled endpoint-policy.io/exclude=true alone", func(ctx context.Context) {
		excluded := newNamespace(ctx, map[string]string{"endpoint-policy.io/exclude": "true"})
		p := pod(excluded, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")))
	})

	It("leaves mirror pods alone", func(ctx context.Context) {
		p := pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
		p.Annotations = map[string]string{"kubernetes.io/config.mirror": "0123456789abcdef"}
		p.Spec.NodeName = "cp-1" // the API requires it of mirror pods
		// A kubelet creates mirror pods; envtest has no NodeRestriction, so
		// the admin user may too.
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")))
	})

	Context("when a later webhook adds a container", Ordered, func() {
		var sidecar *httptest.Server
		BeforeAll(func(ctx context.Context) {
			sidecar = startSidecarInjector(ctx)
		})

		It("is reinvoked and points the new container at the balancer without touching the others twice", func(ctx context.Context) {
			// The API server picks up a new webhook configuration
			// asynchronously: create until the injector has run.
			var p *corev1.Pod
			Eventually(func(g Gomega) {
				p = pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
				p.Labels = map[string]string{"test.endpoint-policy.io/inject-sidecar": "true"}
				g.Expect(k8s.Create(ctx, p)).To(Succeed())
				g.Expect(p.Spec.Containers).To(HaveLen(2), "the sidecar injector ran")
			}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
			for _, c := range p.Spec.Containers {
				Expect(c.Env).To(Equal(envVars(envHost, "localhost", envPort, "7443")), "container %s", c.Name)
			}
			Expect(p.Annotations).To(HaveKeyWithValue(endpointAnnotation, "localhost:7443"))
			Expect(sidecar).NotTo(BeNil())
		})
	})

	Context("configuration changes", Ordered, func() {
		AfterAll(func() { writeConfig(configYAML(nil)) })

		It("switches to Audit without a restart: a warning for the client, no change to the pod", func(ctx context.Context) {
			writeConfig(configYAML(func(c *config.PolicyConfiguration) { c.Mode = policy.Audit }))
			var created *corev1.Pod
			Eventually(func(g Gomega) {
				created = pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
				got := clientWarnings.During(func() { g.Expect(k8s.Create(ctx, created)).To(Succeed()) })
				g.Expect(got).To(ContainElement(HavePrefix(
					`[host-network-endpoint] would set KUBERNETES_SERVICE_HOST=localhost (was "10.0.1.16"), KUBERNETES_SERVICE_PORT=7443 (was "6443")`)))
			}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
			Expect(created.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")))
			Expect(created.Annotations).NotTo(HaveKey(endpointAnnotation))
		})

		It("keeps the last good configuration when the file becomes invalid", func(ctx context.Context) {
			before := reloadErrors()
			writeConfig(configYAML(func(c *config.PolicyConfiguration) { c.Mode = "Sometimes" }))
			Eventually(reloadErrors).WithTimeout(20 * time.Second).Should(BeNumerically(">", before))

			p := pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
			got := clientWarnings.During(func() { Expect(k8s.Create(ctx, p)).To(Succeed()) })
			Expect(got).To(ContainElement(HavePrefix("[host-network-endpoint] would set")), "still in Audit")
			Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")))
		})

		It("switches back to Enforce without a restart, with a new balancer", func(ctx context.Context) {
			writeConfig(configYAML(func(c *config.PolicyConfiguration) {
				c.Policies[hostnetwork.ID].Settings.(*hostnetwork.Settings).Port = 6444
			}))
			Eventually(func(g Gomega) {
				p := pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
				g.Expect(k8s.Create(ctx, p)).To(Succeed())
				g.Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "localhost", envPort, "6444")))
				g.Expect(p.Annotations).To(HaveKeyWithValue(endpointAnnotation, "localhost:6444"))
			}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		})
	})

	It("serves /healthz and counts decisions", func(ctx context.Context) {
		resp, err := http.Get("http://" + probeAddr + "/healthz")
		Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))

		before := counter("endpoint_policy_admission_decisions_total", map[string]string{"policy": "host-network-endpoint", "action": "mutate"})
		Expect(k8s.Create(ctx, pod(ns, true, nil))).To(Succeed())
		Expect(counter("endpoint_policy_admission_decisions_total",
			map[string]string{"policy": "host-network-endpoint", "action": "mutate"})).To(Equal(before + 1))
		Expect(counter("controller_runtime_webhook_requests_total",
			map[string]string{"webhook": "/mutate-v1-pod", "code": "200"})).To(BeNumerically(">", 0))
	})
})

func reloadErrors() float64 {
	return counter("endpoint_policy_config_reloads_total", map[string]string{"result": "error"})
}

// counter reads a counter (or a gauge) from the server's metrics registry
// (the server runs in this process).
func counter(name string, labels map[string]string) float64 {
	v, err := metricstest.Value(crmetrics.Registry, name, labels)
	Expect(err).NotTo(HaveOccurred())
	return v
}

func gauge(name string) float64 { return counter(name, nil) }

// startSidecarInjector registers a second mutating webhook, ordered after
// ours, that adds a container without env to labelled pods. The API server
// then reinvokes our webhook (reinvocationPolicy: IfNeeded).
func startSidecarInjector(ctx context.Context) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer GinkgoRecover()
		var review admissionv1.AdmissionReview
		Expect(json.NewDecoder(r.Body).Decode(&review)).To(Succeed())
		var p corev1.Pod
		Expect(json.Unmarshal(review.Request.Object.Raw, &p)).To(Succeed())
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		hasSidecar := false
		for _, c := range p.Spec.Containers {
			hasSidecar = hasSidecar || c.Name == "sidecar"
		}
		if !hasSidecar {
			patch := fmt.Sprintf(`[{"op":"add","path":"/spec/containers/%d","value":{"name":"sidecar","image":"registry.k8s.io/pause:3.10"}}]`,
				len(p.Spec.Containers))
			resp.Patch = []byte(patch)
			resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
		}
		review.Response, review.Request = resp, nil
		Expect(json.NewEncoder(w).Encode(review)).To(Succeed())
	}))
	DeferCleanup(srv.Close)

	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		// Sorted after "endpoint-policy-mutating": runs after our webhook.
		ObjectMeta: metav1.ObjectMeta{Name: "zz-test-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar.test.endpoint-policy.io",
			AdmissionReviewVersions: []string{"v1"},
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(srv.URL + "/inject"), CABundle: caBundle},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"test.endpoint-policy.io/inject-sidecar": "true"}},
			FailurePolicy:  ptr.To(admissionregistrationv1.Fail),
			SideEffects:    ptr.To(admissionregistrationv1.SideEffectClassNone),
		}},
	}
	Expect(k8s.Create(ctx, cfg)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, cfg))).To(Succeed()) })
	return srv
}
