package integration

import (
	"context"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

// cniFixtures are the CNI fixtures (internal/check/testdata/cni), each
// built from the upstream source it imitates.
var cniFixtures = filepath.Join("..", "..", "internal", "check", "testdata", "cni")

// admitEndpointConfigMap adds nn to the cluster ConfigMaps webhook's
// matchConditions, as the chart renders them for an endpointConfigMaps
// entry a platform adds; undone at cleanup.
func admitEndpointConfigMap(ctx context.Context, namespace, name string) {
	GinkgoHelper()
	for _, v := range testEnv.WebhookInstallOptions.ValidatingWebhooks {
		c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(v), c)).To(Succeed())
		for i := range c.Webhooks {
			w := &c.Webhooks[i]
			if w.Name != "validate-cluster-configmaps.endpoint-policy.io" {
				continue
			}
			before := w.MatchConditions[0].Expression
			w.MatchConditions[0].Expression = before + " || (request.namespace == '" + namespace + "' && request.name == '" + name + "')"
			Expect(k8s.Update(ctx, c)).To(Succeed())
			DeferCleanup(func(ctx context.Context) {
				Expect(k8s.Get(ctx, client.ObjectKeyFromObject(v), c)).To(Succeed())
				c.Webhooks[i].MatchConditions[0].Expression = before
				Expect(k8s.Update(ctx, c)).To(Succeed())
			})
			return
		}
	}
	Fail("no validate-cluster-configmaps webhook")
}

var _ = Describe("endpoints by reference", func() {
	It("get the same verdicts from check, the audit and admission over the CNI fixtures (Cilium k8sServiceHostRef and apiServerURLs, Calico operator and manifest)", func(ctx context.Context) {
		admitEndpointConfigMap(ctx, ciliumAPIEndpoint.Namespace, ciliumAPIEndpoint.Name)
		cli := expectSameVerdicts(ctx, []string{cniFixtures})
		Expect(cli).To(Equal(map[verdict]bool{
			// k8sServiceHostRef to one control-plane node: the workloads
			// that read it, and the ConfigMap.
			{"DaemonSet", "kube-system", "cilium", hostnetwork.ID, policy.ActionWarn}:               true,
			{"Deployment", "kube-system", "cilium-operator", hostnetwork.ID, policy.ActionWarn}:     true,
			{"ConfigMap", "kube-system", "cilium-api-endpoint", cpendpoint.ID, policy.ActionWarn}:   true,
			{"ConfigMap", "kube-system", "cilium-config", cpendpoint.ID, policy.ActionWarn}:         true,
			{"Deployment", "tigera-operator", "tigera-operator", hostnetwork.ID, policy.ActionWarn}: true,
			{"DaemonSet", "calico-system", "calico-node", hostnetwork.ID, policy.ActionMutate}:      true,
		}), "the VIP (control-plane-endpoint), localhost (Calico's manifest) and the pod-network reader have no verdict")
	})

	It("audits Cilium's DaemonSet and its ConfigMap, and clears both when the ConfigMap is set to localhost, the DaemonSet untouched", func(ctx context.Context) {
		in := readFixture(filepath.Join(cniFixtures, "cilium-hostref.yaml"))
		ds := in[0].(*appsv1.DaemonSet)
		cm := in[2].(*corev1.ConfigMap)
		createCNINodes(ctx)
		for _, obj := range []client.Object{cm, ds} {
			Expect(k8s.Create(ctx, obj.DeepCopyObject().(client.Object))).To(Succeed())
			DeferCleanup(func(ctx context.Context) {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, obj.DeepCopyObject().(client.Object)))).To(Succeed())
			})
		}
		reported := func(kind, name string, id policy.ID) func(Gomega) string {
			return func(g Gomega) string {
				r, err := policyReport(ctx, "kube-system")()
				if apierrors.IsNotFound(err) {
					return ""
				}
				g.Expect(err).NotTo(HaveOccurred())
				raw, _, _ := unstructured.NestedSlice(r.Object, "results")
				for _, x := range raw {
					m := x.(map[string]any)
					resources, _ := m["resources"].([]any)
					if m["policy"] != string(id) || m["result"] == "pass" || len(resources) != 1 {
						continue
					}
					if ref := resources[0].(map[string]any); ref["kind"] == kind && ref["name"] == name {
						msg, _ := m["message"].(string)
						return msg
					}
				}
				return ""
			}
		}
		Eventually(reported("DaemonSet", "cilium", hostnetwork.ID)).WithTimeout(settle).WithPolling(polling).
			Should(ContainSubstring(`comes from ConfigMap kube-system/cilium-api-endpoint key "host" = 10.98.0.11`))
		Eventually(reported("ConfigMap", "cilium-api-endpoint", cpendpoint.ID)).WithTimeout(settle).WithPolling(polling).
			Should(ContainSubstring("the address of control-plane node cni-cp-1 only"))
		live := &appsv1.DaemonSet{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ds), live)).To(Succeed())
		generation := live.Generation

		By("setting the ConfigMap to the node-local endpoint")
		admitEndpointConfigMap(ctx, cm.Namespace, cm.Name)
		current := &corev1.ConfigMap{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cm), current)).To(Succeed())
		current.Data["host"] = "localhost"
		Expect(k8s.Update(ctx, current)).To(Succeed())
		Eventually(reported("DaemonSet", "cilium", hostnetwork.ID)).WithTimeout(settle).WithPolling(polling).Should(BeEmpty())
		Eventually(reported("ConfigMap", "cilium-api-endpoint", cpendpoint.ID)).WithTimeout(settle).WithPolling(polling).Should(BeEmpty())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ds), live)).To(Succeed())
		Expect(live.Generation).To(Equal(generation), "the DaemonSet was not changed")
	})

	It("warns at admission when a listed ConfigMap is written with one control-plane node's address", func(ctx context.Context) {
		createCNINodes(ctx)
		cm := readFixture(filepath.Join(cniFixtures, "cilium-urls.yaml"))[0].(*corev1.ConfigMap)
		warnedDuringDryRun(ctx, cm, "[control-plane-endpoint] data[k8s-api-server-urls]: k8s-api-server-urls in ConfigMap kube-system/cilium-config is https://10.98.0.12:6443")
	})

	It("reads the listed ConfigMaps only: the server's ServiceAccount is refused any other", func(ctx context.Context) {
		server, err := client.New(serverConfig, client.Options{})
		Expect(err).NotTo(HaveOccurred())
		for _, nn := range []string{"kube-system/cilium-config", "kube-system/kubernetes-services-endpoint", "calico-system/kubernetes-services-endpoint",
			"tigera-operator/kubernetes-services-endpoint", ciliumAPIEndpoint.String()} {
			ns, name, _ := strings.Cut(nn, "/")
			err := server.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.ConfigMap{})
			Expect(err == nil || apierrors.IsNotFound(err)).To(BeTrue(), "get %s: %v", nn, err)
			err = server.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
			Expect(err).NotTo(HaveOccurred(), "list %s by name", nn)
		}
		Expect(apierrors.IsForbidden(server.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "coredns"}, &corev1.ConfigMap{}))).To(BeTrue(),
			"a ConfigMap outside endpointConfigMaps")
		Expect(apierrors.IsForbidden(server.List(ctx, &corev1.ConfigMapList{}, client.InNamespace("kube-system")))).To(BeTrue(),
			"every ConfigMap of kube-system")
	})
})

// createCNINodes creates the CNI fixtures' control-plane Nodes, their
// addresses written as the kubelet does (status); deleted at cleanup.
func createCNINodes(ctx context.Context) {
	GinkgoHelper()
	for _, n := range readFixture(filepath.Join(cniFixtures, "nodes.yaml")) {
		node := n.(*corev1.Node)
		created := node.DeepCopy()
		Expect(k8s.Create(ctx, created)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, node.DeepCopy()))).To(Succeed())
		})
		created.Status = node.Status
		Expect(k8s.Status().Update(ctx, created)).To(Succeed())
	}
}

// readFixture reads a check fixture's objects, typed, in file order.
func readFixture(path string) []client.Object {
	GinkgoHelper()
	in, err := check.Read([]string{path}, nil)
	Expect(err).NotTo(HaveOccurred())
	out := make([]client.Object, len(in.Objects))
	for i, o := range in.Objects {
		out[i] = o.Object.DeepCopyObject().(client.Object)
	}
	return out
}

var _ = Describe("kube-vip's 2026 advisories", func() {
	It("get the same verdicts from check, the audit and admission over kube-vip manifest daemonset output", func(ctx context.Context) {
		cli := expectSameVerdicts(ctx, []string{filepath.Join("..", "..", "internal", "check", "testdata", "kube-vip-2026")})
		Expect(cli).To(Equal(map[verdict]bool{
			{"DaemonSet", "kube-system", "kube-vip-1654", kubevip.ID, policy.ActionDeny}: true,
			{"DaemonSet", "kube-system", "kube-vip-1655", kubevip.ID, policy.ActionDeny}: true,
			{"DaemonSet", "kube-system", "kube-vip-1590", kubevip.ID, policy.ActionDeny}: true,
			{"DaemonSet", "kube-system", "kube-vip-1747", kubevip.ID, policy.ActionDeny}: true,
		}), "the fixed versions, the workarounds and the unaffected variants are clean")
	})
})
