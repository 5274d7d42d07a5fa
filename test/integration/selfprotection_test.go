package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// deadURL points u at a loopback port nobody listens on.
func deadURL(u *string) *string {
	GinkgoHelper()
	parsed, err := url.Parse(*u)
	Expect(err).NotTo(HaveOccurred())
	parsed.Host = fmt.Sprintf("127.0.0.1:%d", freePort())
	s := parsed.String()
	return &s
}

// withWebhooksDown runs fn while config/webhook's registrations point at a
// dead endpoint: everything (selectors, matchConditions, failure policies)
// as installed, but no server behind them.
func withWebhooksDown(ctx context.Context, fn func()) {
	GinkgoHelper()
	wio := testEnv.WebhookInstallOptions
	withoutWebhooks(ctx, func() {
		var down []client.Object
		// Removed, and no longer called, before the real registrations
		// come back: a dead fail-closed registration left in the API
		// server's cache would refuse kubeadm-config in later specs.
		defer func() {
			By("removing the dead registrations")
			for _, c := range down {
				Expect(k8s.Delete(ctx, c)).To(Succeed())
			}
			Eventually(func() error {
				err := k8s.Create(ctx, kubeadmConfigMap("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"), client.DryRunAll)
				return client.IgnoreAlreadyExists(err)
			}).WithTimeout(settle).WithPolling(polling).Should(Succeed(), "the dead kubeadm-config webhook is no longer called")
		}()
		for _, m := range wio.MutatingWebhooks {
			c := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "down-" + m.Name}}
			for _, w := range m.Webhooks {
				w := *w.DeepCopy()
				w.ClientConfig.URL = deadURL(w.ClientConfig.URL)
				c.Webhooks = append(c.Webhooks, w)
			}
			Expect(k8s.Create(ctx, c)).To(Succeed())
			down = append(down, c)
		}
		for _, v := range wio.ValidatingWebhooks {
			c := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "down-" + v.Name}}
			for _, w := range v.Webhooks {
				w := *w.DeepCopy()
				w.ClientConfig.URL = deadURL(w.ClientConfig.URL)
				c.Webhooks = append(c.Webhooks, w)
			}
			Expect(k8s.Create(ctx, c)).To(Succeed())
			down = append(down, c)
		}
		By("waiting until the API server calls the dead endpoint (the fail-closed kubeadm-config webhook refuses)")
		Eventually(func() error {
			return k8s.Create(ctx, kubeadmConfigMap("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"), client.DryRunAll)
		}).WithTimeout(settle).WithPolling(polling).Should(MatchError(ContainSubstring("failed calling webhook")))
		fn()
	})
}

var _ = Describe("self-protection", func() {
	It("lets its own pods, kube-system's hostNetwork pods and Leases be created while the webhook is down", func(ctx context.Context) {
		withWebhooksDown(ctx, func() {
			By("the webhook's own pod, in its namespace")
			own := pod(serverNamespace, false, nil)
			own.Labels = map[string]string{"app.kubernetes.io/name": "endpoint-policy"}
			Expect(k8s.Create(ctx, own)).To(Succeed())
			DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, own)).To(Succeed()) })

			By("kube-system's hostNetwork pods: a pinned cilium-operator, a kube-apiserver mirror pod, a kube-proxy")
			pinned := pod("kube-system", true, envVars("KUBERNETES_SERVICE_HOST", "10.0.1.16", "KUBERNETES_SERVICE_PORT", "6443"))
			mirror := asMirrorPod(apiServerPod("kube-system", "cp-1", apiServerContainer("10.0.0.11", "--advertise-address=10.0.0.11")))
			kubeProxy := kubeProxyPod("kube-system", "worker-1")
			for _, p := range []*corev1.Pod{pinned, mirror, kubeProxy} {
				Expect(k8s.Create(ctx, p)).To(Succeed())
				DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, p, client.GracePeriodSeconds(0))).To(Succeed()) })
			}
			Expect(pinned.Spec.Containers[0].Env).To(Equal(envVars("KUBERNETES_SERVICE_HOST", "10.0.1.16", "KUBERNETES_SERVICE_PORT", "6443")),
				"admitted as it was: mutation fails open")

			By("a node heartbeat Lease in kube-node-lease, and the webhook's own leader Lease")
			for _, ns := range []string{"kube-node-lease", serverNamespace} {
				l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{GenerateName: "self-protection-", Namespace: ns}}
				Expect(k8s.Create(ctx, l)).To(Succeed())
				DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, l)).To(Succeed()) })
			}

			By("kube-public/cluster-info and kube-system/kube-proxy, which kubeadm writes mid-init: their webhook fails open")
			for _, cm := range []*corev1.ConfigMap{
				{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-public", Name: "cluster-info"}},
				{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy"}},
			} {
				Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, cm, client.DryRunAll))).To(Succeed())
			}

			By("only kube-system/kubeadm-config is refused: its webhook fails closed, by design")
			Expect(k8s.Create(ctx, kubeadmConfigMap("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"), client.DryRunAll)).
				To(MatchError(ContainSubstring(`failed calling webhook "validate-kubeadm-config.endpoint-policy.io"`)))
		})
	})

	It("runs with the chart's RBAC: what the server calls is granted, and nothing next to it", func(ctx context.Context) {
		type access struct {
			verb, group, resource, namespace, name, path string
		}
		sar := func(a access) bool {
			GinkgoHelper()
			r := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   serviceaccount.MakeUsername(serverNamespace, serverServiceAccount),
				Groups: append(serviceaccount.MakeGroupNames(serverNamespace), "system:authenticated"),
			}}
			if a.path != "" {
				r.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Verb: a.verb, Path: a.path}
			} else {
				r.Spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group,
					Resource: a.resource, Namespace: a.namespace, Name: a.name}
			}
			Expect(k8s.Create(ctx, r)).To(Succeed())
			return r.Status.Allowed
		}
		granted := []access{
			{verb: "list", resource: "pods"}, {verb: "watch", resource: "pods"}, {verb: "patch", resource: "pods", namespace: "kube-system"},
			{verb: "list", resource: "nodes"}, {verb: "watch", resource: "namespaces"},
			{verb: "list", group: "apps", resource: "daemonsets"}, {verb: "watch", group: "batch", resource: "cronjobs"},
			{verb: "create", group: "events.k8s.io", resource: "events", namespace: "kube-system"}, {verb: "list", resource: "events"},
			{verb: "patch", group: "wgpolicyk8s.io", resource: "policyreports", namespace: "default"},
			{verb: "list", resource: "configmaps", namespace: "kube-system", name: "kubeadm-config"},
			{verb: "watch", resource: "configmaps", namespace: "kube-system", name: "kube-proxy"},
			{verb: "list", resource: "configmaps", namespace: "kube-public", name: "cluster-info"},
			{verb: "patch", group: "openreports.io", resource: "reports", namespace: "default"},
			{verb: "watch", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations"},
			{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: serverNamespace, name: "endpoint-policy.endpoint-policy.io"},
			{verb: "create", group: "authentication.k8s.io", resource: "tokenreviews"},
			{verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews"},
		}
		// One step beyond each grant.
		refused := []access{
			{verb: "get", resource: "pods", namespace: "kube-system", name: "kube-apiserver-cp-1"},
			{verb: "update", resource: "pods", namespace: "kube-system"}, {verb: "delete", resource: "pods", namespace: "kube-system"},
			{verb: "create", resource: "pods", namespace: "kube-system"}, {verb: "create", resource: "pods/eviction", namespace: "kube-system"},
			{verb: "patch", resource: "nodes"}, {verb: "delete", resource: "namespaces"},
			{verb: "update", group: "apps", resource: "daemonsets", namespace: "kube-system"},
			{verb: "list", resource: "secrets"}, {verb: "get", resource: "secrets", namespace: serverNamespace, name: "endpoint-policy-tls"},
			{verb: "list", resource: "configmaps", namespace: "kube-system"},
			{verb: "get", resource: "configmaps", namespace: "kube-system", name: "kubeadm-config"},
			{verb: "update", resource: "configmaps", namespace: "kube-system", name: "kubeadm-config"},
			{verb: "list", resource: "configmaps", namespace: "kube-public"},
			{verb: "get", resource: "configmaps", namespace: "kube-public", name: "cluster-info"},
			{verb: "update", resource: "configmaps", namespace: "kube-system", name: "kube-proxy"},
			{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: "kube-system"},
			{verb: "delete", group: "coordination.k8s.io", resource: "leases", namespace: serverNamespace},
			{verb: "update", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: "endpoint-policy-mutating"},
			{verb: "patch", group: "admissionregistration.k8s.io", resource: "validatingwebhookconfigurations", name: "endpoint-policy-validating"},
			{verb: "delete", group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: "endpoint-policy-mutating"},
			{verb: "create", resource: "serviceaccounts/token", namespace: serverNamespace},
			{verb: "impersonate", resource: "users"}, {verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
			{verb: "get", path: "/metrics"},
		}
		for _, a := range granted {
			Expect(sar(a)).To(BeTrue(), "%+v", a)
		}
		for _, a := range refused {
			Expect(sar(a)).To(BeFalse(), "%+v is granted: more than the server needs", a)
		}
	})
})

// webhookRequests counts the requests the suite's server answered on path.
func webhookRequests(path string) float64 {
	return counter("controller_runtime_webhook_requests_total", map[string]string{"webhook": path, "code": "200"})
}

var _ = Describe("Kubernetes' webhook conformance behaviours, against our server", func() {
	It("shows the client our denial message", func(ctx context.Context) {
		cm := kubeadmConfigMap("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  extraArgs:\n    - name: advertise-address\n      value: 10.0.0.11\n")
		err := k8s.Create(ctx, cm)
		if err == nil {
			DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, cm)).To(Succeed()) })
		}
		Expect(err).To(MatchError(And(
			ContainSubstring(`admission webhook "validate-kubeadm-config.endpoint-policy.io" denied the request`),
			ContainSubstring("[apiserver-advertise-address]"))))
		// The fields reach the client one by one too, as the API server's own
		// validation gives them (status.details.causes).
		var status apierrors.APIStatus
		Expect(errors.As(err, &status)).To(BeTrue(), "a status error: %v", err)
		Expect(status.Status().Details).NotTo(BeNil())
		Expect(status.Status().Details.Causes).To(ContainElement(And(
			HaveField("Type", metav1.CauseType("FieldValueForbidden")),
			HaveField("Field", Equal("data[ClusterConfiguration].apiServer.extraArgs[0]")),
			HaveField("Message", ContainSubstring("[apiserver-advertise-address]")))))
	})

	It("mutates before defaulting: the pod it rewrites is then defaulted by the API server", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		p := pod(ns, true, nil)
		Expect(k8s.Create(ctx, p)).To(Succeed())
		got := &corev1.Pod{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(p), got)).To(Succeed())
		c := got.Spec.Containers[0]
		Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: "localhost"}))
		Expect(c.TerminationMessagePolicy).To(Equal(corev1.TerminationMessageReadFile))
		Expect(c.TerminationMessagePath).To(Equal(corev1.TerminationMessagePathDefault))
		Expect(c.ImagePullPolicy).NotTo(BeEmpty())
		Expect(got.Spec.DNSPolicy).To(Equal(corev1.DNSClusterFirst))
	})

	It("is not called for the namespaces its namespaceSelector excludes: its own and kube-node-lease", func(ctx context.Context) {
		before := webhookRequests("/mutate-v1-pod")
		for _, ns := range []string{serverNamespace, "kube-node-lease"} {
			p := pod(ns, true, nil)
			Expect(k8s.Create(ctx, p, client.DryRunAll)).To(Succeed())
			Expect(p.Spec.Containers[0].Env).To(BeEmpty(), "not rewritten in %s", ns)
		}
		Expect(webhookRequests("/mutate-v1-pod")).To(Equal(before), "the API server did not call the webhook")
		Expect(k8s.Create(ctx, pod("default", true, nil), client.DryRunAll)).To(Succeed())
		Expect(webhookRequests("/mutate-v1-pod")).To(Equal(before+1), "the counter does count calls")
	})

	It("is not called for the pods its matchConditions filter out", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		mutate, validate := webhookRequests("/mutate-v1-pod"), webhookRequests("/validate-workloads")
		// Neither hostNetwork nor bound, and no control-plane container.
		Expect(k8s.Create(ctx, pod(ns, false, nil), client.DryRunAll)).To(Succeed())
		Expect(webhookRequests("/mutate-v1-pod")).To(Equal(mutate))
		Expect(webhookRequests("/validate-workloads")).To(Equal(validate))
	})

	It("handles dry-run requests without side effects: the same answer, no Event", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		mirror := asMirrorPod(apiServerPod(ns, "cp-dry-run", apiServerContainer("10.0.0.11")))
		warned := clientWarnings.During(func() {
			Expect(k8s.Create(ctx, mirror, client.DryRunAll)).To(Succeed())
		})
		Expect(strings.Join(warned, "\n")).To(ContainSubstring("[apiserver-probe-host]"), "the warning of a real create")
		Consistently(func() ([]string, error) {
			list := &corev1.EventList{}
			err := k8s.List(ctx, list, client.InNamespace(ns))
			var reasons []string
			for _, e := range list.Items {
				reasons = append(reasons, e.Reason)
			}
			return reasons, err
		}).WithTimeout(2*time.Second).WithPolling(polling).Should(BeEmpty(), "an Event was recorded for a dry run")
	})
})

var _ = Describe("TLS", func() {
	It("accepts TLS 1.2 by default (the suite's server) and only TLS 1.3 with --tls-min-version=1.3", func() {
		r := startReplica("tls13", "", "--tls-min-version=1.3")
		dial := func(version uint16) error {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", r.addr(),
				&tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version})
			if err == nil {
				conn.Close()
			}
			return err
		}
		Expect(dial(tls.VersionTLS12)).To(HaveOccurred(), "TLS 1.2 refused")
		Expect(dial(tls.VersionTLS13)).To(Succeed())
		wio := testEnv.WebhookInstallOptions
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort)),
			&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
		Expect(err).NotTo(HaveOccurred(), "TLS 1.2 accepted by default")
		conn.Close()
	})
})
