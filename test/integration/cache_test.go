package integration

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
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

var _ = Describe("the audit's cache", func() {
	It("holds no pods, each of the policies' ConfigMaps by name and no other, and workloads without status, managed fields or an owned template", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		create(ctx, pod(ns, true, nil))
		for _, cm := range []*corev1.ConfigMap{
			kubeadmConfigMap("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"),
			{ObjectMeta: metav1.ObjectMeta{GenerateName: "cm-", Namespace: "kube-system"}},
			{ObjectMeta: metav1.ObjectMeta{GenerateName: "cm-", Namespace: ns}},
		} {
			Expect(k8s.Create(ctx, cm)).To(Succeed())
			DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, cm))).To(Succeed()) })
		}
		d := apiServerDeployment(ns, apiServerContainer("127.0.0.1"))
		Expect(k8s.Create(ctx, d)).To(Succeed())
		owned := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "rs-", Namespace: ns, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true)}}},
			Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template},
		}
		Expect(k8s.Create(ctx, owned)).To(Succeed())

		start := func(opts cache.Options, objs ...client.Object) cache.Cache {
			return startCache(ctx, opts, nil, objs...)
		}
		c := start(audit.CacheOptions(), &appsv1.Deployment{}, &appsv1.ReplicaSet{})
		Expect(c.List(ctx, &corev1.PodList{})).NotTo(Succeed(), "no pod is cached: the audit's pod feed keeps none")
		Expect(c.List(ctx, &corev1.ConfigMapList{})).NotTo(Succeed(), "no ConfigMap is in the workloads' cache")

		for _, nn := range audit.AuditedConfigMaps {
			cmCache := start(audit.ConfigMapCacheOptions(nn), &corev1.ConfigMap{})
			cms := &corev1.ConfigMapList{}
			Expect(cmCache.List(ctx, cms)).To(Succeed())
			for _, cm := range cms.Items {
				Expect(cm.Namespace+"/"+cm.Name).To(Equal(nn.String()), "only %s is cached", nn)
			}
			if nn.Name == "kubeadm-config" {
				Expect(cms.Items).To(HaveLen(1))
			}
			Expect(cmCache.List(ctx, cms, client.InNamespace(ns))).NotTo(Succeed(), "no other namespace's ConfigMaps are even listed")
		}

		got := &appsv1.Deployment{}
		Expect(c.Get(ctx, client.ObjectKeyFromObject(d), got)).To(Succeed())
		Expect(got.ManagedFields).To(BeEmpty())
		Expect(got.Spec.Template.Spec.Containers).To(HaveLen(1), "the template is what the policies read")
		rs := &appsv1.ReplicaSet{}
		Expect(c.Get(ctx, client.ObjectKeyFromObject(owned), rs)).To(Succeed())
		Expect(rs.Spec.Template.Spec.Containers).To(BeEmpty(), "a Deployment's ReplicaSet is audited through the Deployment")
	})
})

var _ = Describe("the namespaces' store", func() {
	It("answers a namespace's labels from the cache's Namespace informer, as the cache's Get does", func(ctx context.Context) {
		labelled := newNamespace(ctx, map[string]string{"endpoint-policy.io/exclude": "true"})
		plain := newNamespace(ctx, nil)
		var labelsOf func(string) (map[string]string, error)
		c := startCache(ctx, cluster.CacheOptions(), func(c cache.Cache) {
			var err error
			labelsOf, err = cluster.NamespaceStore(ctx, c)
			Expect(err).NotTo(HaveOccurred())
		})

		for _, ns := range []string{labelled, plain, "no-such-namespace", ""} {
			want, err := cluster.NamespaceLabels(ctx, c, ns)
			Expect(err).NotTo(HaveOccurred())
			Expect(labelsOf(ns)).To(Equal(want), "namespace %q", ns)
		}
		Expect(labelsOf(labelled)).To(HaveKeyWithValue("endpoint-policy.io/exclude", "true"))

		// A reader that is not a cache is asked through NamespaceLabels.
		direct, err := cluster.NamespaceStore(ctx, k8s)
		Expect(err).NotTo(HaveOccurred())
		Expect(direct(labelled)).To(HaveKeyWithValue("endpoint-policy.io/exclude", "true"))
	})
})

// startCache starts a cache with opts, the informers of objs asked for
// first (as the controllers' sources ask for theirs) and before, if set,
// and waits until it has synced.
func startCache(ctx context.Context, opts cache.Options, before func(cache.Cache), objs ...client.Object) cache.Cache {
	GinkgoHelper()
	opts.Scheme = k8s.Scheme()
	c, err := cache.New(restConfig, opts)
	Expect(err).NotTo(HaveOccurred())
	for _, obj := range objs {
		_, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		Expect(err).NotTo(HaveOccurred())
	}
	if before != nil {
		before(c)
	}
	cacheCtx, stop := context.WithCancel(ctx)
	DeferCleanup(stop)
	go func() {
		defer GinkgoRecover()
		Expect(c.Start(cacheCtx)).To(Succeed())
	}()
	Expect(c.WaitForCacheSync(ctx)).To(BeTrue())
	return c
}
