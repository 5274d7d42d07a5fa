package integration

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
)

var _ = Describe("the kube-proxy pod caches", func() {
	It("hold only the selected pods, each once, slimmed, by node", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		node := newWorker(ctx)
		daemonSetPod := create(ctx, kubeProxyPod(ns, node.Name))
		static := kubeProxyPod(ns, node.Name)
		static.Labels = map[string]string{"component": "kube-proxy", "k8s-app": "kube-proxy"} // both selectors
		create(ctx, static)
		for range 20 {
			other := pod(ns, false, nil)
			other.Spec.NodeName = node.Name
			create(ctx, other)
		}

		mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
		})
		Expect(err).NotTo(HaveOccurred())
		selectors, err := kubeproxy.DefaultSettings().Selectors()
		Expect(err).NotTo(HaveOccurred())
		pods, err := cluster.NewSelectedPods(ctx, mgr, selectors)
		Expect(err).NotTo(HaveOccurred())
		mgrCtx, stop := context.WithCancel(ctx)
		DeferCleanup(stop)
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(mgrCtx)).To(Succeed())
		}()

		Eventually(func() ([]string, error) {
			got, err := pods.OnNode(ctx, node.Name)
			var names []string
			for _, p := range got {
				names = append(names, p.Name)
			}
			return names, err
		}).WithTimeout(settle).WithPolling(polling).Should(ConsistOf(daemonSetPod.Name, static.Name))

		got, err := pods.OnNode(ctx, node.Name)
		Expect(err).NotTo(HaveOccurred())
		for _, p := range got {
			Expect(p.Spec.Containers).To(BeEmpty(), "the cache keeps metadata and nodeName only")
			Expect(p.ManagedFields).To(BeEmpty())
			Expect(p.Spec.NodeName).To(Equal(node.Name))
		}
		Expect(pods.OnNode(ctx, "no-such-node")).To(BeEmpty())
	})
})
