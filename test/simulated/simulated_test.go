// Package simulated runs endpoint-policy in a simulated cluster (test/sim):
// the envtest API server with the real kube-controller-manager,
// kube-scheduler and kwok, so that DaemonSets and Deployments get their pods
// from the real controllers, bound by the real scheduler, and Running and
// Ready by kwok.
package simulated

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/server"
	"github.com/endpoint-policy/endpoint-policy/test/sim"
)

func TestSimulated(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "endpoint-policy in a simulated cluster (kwok)")
}

const (
	nodes     = 20
	namespace = "endpoint-policy"
	settle    = time.Minute
	polling   = 200 * time.Millisecond
)

var (
	cluster *sim.Cluster
	k8s     client.Client
)

var _ = BeforeSuite(func(ctx context.Context) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	apiServer, assets, err := sim.AssetsFromEnv()
	if err != nil {
		Fail(err.Error() + " (run make test)")
	}
	env := &envtest.Environment{WebhookInstallOptions: envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join("..", "..", "config", "webhook")},
	}}
	cluster, err = sim.Start(ctx, sim.Options{APIServerAssets: apiServer, Assets: assets, Nodes: nodes, Env: env, LogDir: GinkgoT().TempDir()})
	if err != nil {
		if cluster != nil {
			cluster.Stop()
		}
		Fail(err.Error())
	}
	DeferCleanup(cluster.Stop)
	k8s, err = client.New(cluster.Config, client.Options{})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})).To(Succeed())

	By("publishing every node's agent report, as the node agents would: localhost:7443 verified")
	for i := range nodes {
		lease, err := hostnetwork.NewLease(namespace, hostnetwork.Report{
			Node: sim.NodeName(i), Endpoint: "localhost:7443", RenewTime: time.Now(),
			Checks: []hostnetwork.Check{{Endpoint: "localhost:7443", Status: hostnetwork.StatusVerified, Message: "simulated"}},
		}, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		Expect(k8s.Create(ctx, lease)).To(Succeed())
	}

	By("starting endpoint-policy serve, with its built-in configuration")
	startServer(env)
}, NodeTimeout(10*time.Minute))

func startServer(env *envtest.Environment) {
	wio := env.WebhookInstallOptions
	opts := server.DefaultOptions()
	opts.WebhookHost, opts.WebhookPort, opts.CertDir = wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir
	opts.MetricsBindAddress = "0"
	opts.HealthProbeBindAddress = "127.0.0.1:0"
	opts.Namespace = namespace
	opts.LeaderElect = false
	opts.ShutdownDelay = 0
	cfg := config.Default()
	out, err := yaml.Marshal(cfg)
	Expect(err).NotTo(HaveOccurred())
	opts.ConfigFile = filepath.Join(GinkgoT().TempDir(), "config.yaml")
	Expect(writeFile(opts.ConfigFile, out)).To(Succeed())
	srv, err := server.New(opts)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		done <- srv.Run(logf.IntoContext(ctx, logf.Log), cluster.Config)
	}()
	DeferCleanup(func() {
		cancel()
		Eventually(done).WithTimeout(30 * time.Second).Should(Receive(BeNil()))
	})
	By("waiting until the API server's calls reach the webhook: a dry-run pod is rewritten")
	Eventually(func(g Gomega) []corev1.EnvVar {
		p := hostNetworkPod("probe", nil)
		p.Spec.NodeName = sim.NodeName(0)
		g.Expect(k8s.Create(context.Background(), p, client.DryRunAll)).To(Succeed())
		return p.Spec.Containers[0].Env
	}).WithTimeout(settle).WithPolling(polling).ShouldNot(BeEmpty())
}

var _ = Describe("a simulated cluster", func() {
	It("rewrites the pods the controllers create, and annotates kube-proxy on a node being deleted until the taint goes", func(ctx context.Context) {
		ds := []*appsv1.DaemonSet{kubeProxyDaemonSet(), ciliumAgentDaemonSet()}
		for _, d := range ds {
			Expect(k8s.Create(ctx, d)).To(Succeed())
			DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, d)).To(Succeed()) })
		}
		operator := ciliumOperatorDeployment()
		Expect(k8s.Create(ctx, operator)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8s.Delete(ctx, operator)).To(Succeed()) })

		By("every DaemonSet pod scheduled, Running and Ready on its kwok node")
		for _, app := range []string{"kube-proxy", "cilium"} {
			Eventually(func(g Gomega) int {
				return len(readyPods(ctx, g, map[string]string{"k8s-app": app}))
			}).WithTimeout(settle).WithPolling(polling).Should(Equal(nodes), app)
		}
		Eventually(func(g Gomega) int {
			return len(readyPods(ctx, g, map[string]string{"io.cilium/app": "operator"}))
		}).WithTimeout(settle).WithPolling(polling).Should(Equal(2))

		By("the cilium agents and operator, pinned to 10.0.1.16, rewritten to the verified local balancer")
		for _, sel := range []map[string]string{{"k8s-app": "cilium"}, {"io.cilium/app": "operator"}} {
			for _, p := range pods(ctx, sel) {
				Expect(p.Spec.Containers[0].Env).To(ContainElements(
					corev1.EnvVar{Name: hostnetwork.EnvHost, Value: "localhost"}, corev1.EnvVar{Name: hostnetwork.EnvPort, Value: "7443"}), p.Name)
				Expect(p.Annotations).To(HaveKeyWithValue(hostnetwork.EndpointAnnotation, "localhost:7443"))
			}
		}

		By("cluster-autoscaler tainting one node")
		going := sim.NodeName(7)
		node := &corev1.Node{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: going}, node)).To(Succeed())
		patch := client.MergeFrom(node.DeepCopy())
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: kubeproxy.ToBeDeletedTaint,
			Value: fmt.Sprint(time.Now().Unix()), Effect: corev1.TaintEffectNoSchedule})
		Expect(k8s.Patch(ctx, node, patch)).To(Succeed())
		annotated := func(g Gomega) []string {
			var out []string
			for _, p := range readyPods(ctx, g, map[string]string{"k8s-app": "kube-proxy"}) {
				if _, ok := p.Annotations[kubeproxy.NodeDeletingAnnotation]; ok {
					out = append(out, p.Spec.NodeName)
				}
			}
			return out
		}
		Eventually(annotated).WithTimeout(settle).WithPolling(polling).Should(Equal([]string{going}))

		By("the scale-down cancelled: the taint goes, and so does the annotation")
		Expect(k8s.Get(ctx, client.ObjectKey{Name: going}, node)).To(Succeed())
		patch = client.MergeFrom(node.DeepCopy())
		var kept []corev1.Taint
		for _, t := range node.Spec.Taints {
			if t.Key != kubeproxy.ToBeDeletedTaint {
				kept = append(kept, t)
			}
		}
		node.Spec.Taints = kept
		Expect(k8s.Patch(ctx, node, patch)).To(Succeed())
		Eventually(annotated).WithTimeout(settle).WithPolling(polling).Should(BeEmpty())
		Expect(cluster.Healthy()).To(Succeed())
	})
})

func pods(ctx context.Context, sel map[string]string) []corev1.Pod {
	GinkgoHelper()
	list := &corev1.PodList{}
	Expect(k8s.List(ctx, list, client.InNamespace("kube-system"), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(sel)})).To(Succeed())
	return list.Items
}

func readyPods(ctx context.Context, g Gomega, sel map[string]string) []corev1.Pod {
	list := &corev1.PodList{}
	g.Expect(k8s.List(ctx, list, client.InNamespace("kube-system"), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(sel)})).To(Succeed())
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out
}
