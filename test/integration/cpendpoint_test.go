package integration

import (
	"context"
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
)

// endpointKubeconfig is a kubeconfig as kubeadm writes it into
// kube-public/cluster-info and kube-system/kube-proxy, with server.
func endpointKubeconfig(server string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"+
		"    server: %s\n  name: default\ncontexts:\n- context: {cluster: default, user: default}\n  name: default\ncurrent-context: default\n", server)
}

var _ = Describe("control-plane-endpoint", func() {
	It("warns at admission and reports in the audit one control-plane node's address used as the cluster's endpoint; check agrees", func(ctx context.Context) {
		By("three control-plane nodes (kubespray #11423's shape), on addresses no other spec uses")
		var nodes []client.Object
		for i := 1; i <= 3; i++ {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cpe-%d", i), Labels: map[string]string{cpendpoint.ControlPlaneLabel: ""}}}
			Expect(k8s.Create(ctx, n)).To(Succeed())
			DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, n))).To(Succeed()) })
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.99.0.1%d", i)}, {Type: corev1.NodeHostName, Address: n.Name}}
			Expect(k8s.Status().Update(ctx, n)).To(Succeed())
			nodes = append(nodes, n)
		}

		ns := newNamespace(ctx, nil)
		clusterInfo := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Namespace: cpendpoint.ClusterInfoNamespace, Name: cpendpoint.ClusterInfoName},
			Data:       map[string]string{cpendpoint.ClusterInfoKey: endpointKubeconfig("https://10.99.0.11:6443")},
		}
		kubeProxy := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Namespace: cpendpoint.KubeProxyNamespace, Name: cpendpoint.KubeProxyName},
			Data:       map[string]string{cpendpoint.KubeProxyKubeconfigKey: endpointKubeconfig("https://10.99.0.11:6443")},
		}
		labels := map[string]string{"component": "kube-proxy", "tier": "node"}
		proxyDS := &appsv1.DaemonSet{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-proxy-gce"},
			Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy-amd64:v1.37.2",
					// kube-up's GCE manifest (cluster/gce/manifests/kube-proxy.manifest).
					Command: []string{"/bin/sh", "-c", "exec kube-proxy --master=https://10.99.0.12 --oom-score-adj=-998 1>>/var/log/kube-proxy.log 2>&1"}}}},
			}},
		}
		objects := []client.Object{clusterInfo, kubeProxy, proxyDS}

		By("admission warns (Audit) once the server's cache knows the nodes")
		for _, obj := range objects {
			warnedDuringDryRun(ctx, obj, "[control-plane-endpoint]")
		}
		warnedDuringDryRun(ctx, clusterInfo, "the server of the kubeconfig in kube-public/cluster-info is https://10.99.0.11:6443, the address of control-plane node cpe-1 only, one of 3")
		for _, obj := range objects {
			Expect(k8s.Create(ctx, obj.DeepCopyObject().(client.Object))).To(Succeed(), "Audit admits")
			DeferCleanup(func(ctx context.Context) {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, obj.DeepCopyObject().(client.Object)))).To(Succeed())
			})
		}

		By("the check CLI on the same objects and the Nodes")
		var in check.Input
		for _, obj := range append(append([]client.Object{}, nodes...), objects...) {
			o := obj.DeepCopyObject().(client.Object)
			if n, ok := o.(*corev1.Node); ok {
				n.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}
			}
			in.Objects = append(in.Objects, check.Object{Object: o, Source: "spec"})
		}
		engine, err := config.Default().Engine()
		Expect(err).NotTo(HaveOccurred())
		cli := map[verdict]bool{}
		for _, f := range check.Check(&in, engine).Findings {
			if f.Policy == cpendpoint.ID {
				cli[verdict{f.Kind, f.Namespace, f.Name, f.Policy, f.Action}] = true
			}
		}
		Expect(cli).To(Equal(map[verdict]bool{
			{"ConfigMap", cpendpoint.ClusterInfoNamespace, cpendpoint.ClusterInfoName, cpendpoint.ID, policy.ActionWarn}: true,
			{"ConfigMap", cpendpoint.KubeProxyNamespace, cpendpoint.KubeProxyName, cpendpoint.ID, policy.ActionWarn}:     true,
			{"DaemonSet", ns, "kube-proxy-gce", cpendpoint.ID, policy.ActionWarn}:                                        true,
		}))

		By("the background audit reports the same, with the check's rule")
		Eventually(func(g Gomega) map[verdict]bool {
			got := map[verdict]bool{}
			for _, n := range []string{cpendpoint.ClusterInfoNamespace, cpendpoint.KubeProxyNamespace, ns} {
				r, err := policyReport(ctx, n)()
				if apierrors.IsNotFound(err) {
					continue
				}
				g.Expect(err).NotTo(HaveOccurred())
				results, _, _ := unstructured.NestedSlice(r.Object, "results")
				for i, res := range resultsOf(r) {
					if res.Policy != string(cpendpoint.ID) {
						continue
					}
					rule, _ := results[i].(map[string]any)["rule"].(string)
					g.Expect(rule).To(BeElementOf(cpendpoint.RuleClusterInfo, cpendpoint.RuleKubeProxyConfig, cpendpoint.RuleKubeProxyMaster))
					got[verdict{res.Kind, res.Namespace, res.Name, policy.ID(res.Policy), policy.Action(res.Action)}] = true
				}
			}
			return got
		}).WithTimeout(settle).WithPolling(polling).Should(Equal(cli))

		By("behind a VIP no node has, cluster-info is fine: the report loses the result")
		Eventually(func() error {
			cm := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(clusterInfo), cm); err != nil {
				return err
			}
			cm.Data[cpendpoint.ClusterInfoKey] = endpointKubeconfig("https://10.99.0.10:6443")
			return k8s.Update(ctx, cm)
		}).WithTimeout(settle).Should(Succeed())
		Eventually(func() error { _, err := policyReport(ctx, cpendpoint.ClusterInfoNamespace)(); return err }).
			WithTimeout(settle).Should(Satisfy(apierrors.IsNotFound), "kube-public has nothing left to report")
	})
})
