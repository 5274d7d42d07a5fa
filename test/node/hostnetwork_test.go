package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The chart's install on the host network (values hostNetwork: true), in
// its own namespace beside the suite's in-process server, on ports of the
// node that nothing else here uses.
const (
	chartNamespace = "ep-hostnet"
	chartRelease   = "endpoint-policy"
	productImage   = "endpoint-policy.test/endpoint-policy:node"
	chartWebhook   = 29443
	chartMetrics   = 28443
	chartHealth    = 28081
)

var _ = Describe("the webhook on the host network survives the CNI (the hostNetwork: true install)", func() {
	It("is installed by helm with the image make image builds, answers through its Service at the node's address, and still answers with the pod network's bridge removed", func(ctx context.Context) {
		By("the image make image builds, imported into containerd")
		importProductImage()

		By("the scheduler and the controllers the chart's workloads and Service need: deployment, replicaset, daemonset, endpointslice, garbage collector, node lifecycle (the Ready node's not-ready taint), and the ServiceAccount ones")
		startControllers()

		By("only the chart's webhooks answer in this spec: the suite's own (the in-process server's) are taken out")
		withoutSuiteWebhooks(ctx)

		By("helm install of the chart: hostNetwork: true, the webhook on the node's address (webhook.bindAddress: hostIP)")
		helmInstall(ctx)

		chartAnswers(ctx)

		By("a pod on the pod network brings up the CNI's bridge; the pod is deleted and the bridge removed")
		removePodNetwork(ctx)

		By("admission still answers: every request, not a lucky one")
		for range 5 {
			Expect(kubeVIPDenial(ctx)).To(ContainSubstring("kube-vip-ipvs-backends"))
		}
	})
})

// chartAnswers waits until the chart's server answers admission: its pod
// Ready on the host network, its Service's EndpointSlice at the node's
// address, and a kube-vip DaemonSet of an affected release denied.
func chartAnswers(ctx context.Context) {
	GinkgoHelper()
	By("its pod runs on the host network and is Ready; the Service's EndpointSlice has the node's address")
	ip := nodeAddress(ctx)
	Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		// The Deployment's pods (the agent's have no pod-template-hash).
		g.Expect(k8s.List(ctx, pods, client.InNamespace(chartNamespace), client.HasLabels{"pod-template-hash"})).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(1))
		p := pods.Items[0]
		g.Expect(p.Spec.HostNetwork).To(BeTrue())
		g.Expect(p.Status.PodIP).To(Equal(ip))
		g.Expect(isReady(&p)).To(BeTrue(), "the server's pod Ready: %v", p.Status.Conditions)
	}).WithTimeout(120*time.Second).WithPolling(time.Second).Should(Succeed(), podLogs)
	Eventually(func(g Gomega) {
		slices := &discoveryv1.EndpointSliceList{}
		g.Expect(k8s.List(ctx, slices, client.InNamespace(chartNamespace), client.MatchingLabels{discoveryv1.LabelServiceName: chartRelease + "-webhook"})).To(Succeed())
		// The node's address, ready, on the webhook's port: the
		// controller's placeholder slice (no endpoints) aside.
		var ready []string
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					for _, p := range s.Ports {
						ready = append(ready, fmt.Sprintf("%s:%d", e.Addresses[0], *p.Port))
					}
				}
			}
		}
		g.Expect(ready).To(ConsistOf(fmt.Sprintf("%s:%d", ip, chartWebhook)), "%+v", slices.Items)
	}).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())

	By("admission answers through the Service: a kube-vip DaemonSet of an affected release is denied (Enforce)")
	Eventually(kubeVIPDenial).WithArguments(ctx).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(ContainSubstring("kube-vip-ipvs-backends"))
}

// importProductImage builds the product's image with make image, as a user
// does, and imports it into the node's containerd.
func importProductImage() {
	GinkgoHelper()
	dir := filepath.Join(node.dir, "product-image")
	cmd := exec.Command("make", "--no-print-directory", "image", "IMAGE_DIR="+dir, "IMG="+productImage)
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "make image: %s", out)
	run("ctr", "-a", node.socket, "-n", "k8s.io", "images", "import", filepath.Join(dir, "endpoint-policy.tar"))
}

// startControllers runs kube-scheduler and kube-controller-manager (the
// simulated cluster's, from the same module) with the controllers that turn
// the chart's Deployment and the agent's DaemonSet into pods on the node and
// its Service into an EndpointSlice, and that give every namespace its
// default ServiceAccount and kube-root-ca.crt (a client's token and CA),
// until the spec ends.
func startControllers() {
	GinkgoHelper()
	kubeconfig := "--kubeconfig=" + filepath.Join(node.dir, "kubeconfig")
	kcm := node.start("kube-controller-manager", filepath.Join(os.Getenv("ENDPOINT_POLICY_SIM_ASSETS"), "kube-controller-manager"), kubeconfig,
		"--controllers=deployment,replicaset,daemonset,endpointslice-controller,garbage-collector-controller,node-lifecycle-controller,"+
			"serviceaccount-controller,root-ca-certificate-publisher-controller",
		"--root-ca-file="+caFile,
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false")
	DeferCleanup(func() { stopProcess(kcm) })
	scheduler := node.start("kube-scheduler", filepath.Join(os.Getenv("ENDPOINT_POLICY_SIM_ASSETS"), "kube-scheduler"), kubeconfig,
		"--leader-elect=false", "--secure-port=0")
	DeferCleanup(func() { stopProcess(scheduler) })
}

// withoutSuiteWebhooks deletes the webhook configurations envtest installed
// for the suite's in-process server until the spec ends.
func withoutSuiteWebhooks(ctx context.Context) {
	GinkgoHelper()
	var objs []client.Object
	for _, w := range testEnv.WebhookInstallOptions.MutatingWebhooks {
		objs = append(objs, w.DeepCopy())
	}
	for _, w := range testEnv.WebhookInstallOptions.ValidatingWebhooks {
		objs = append(objs, w.DeepCopy())
	}
	Expect(objs).NotTo(BeEmpty())
	for _, o := range objs {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, o))).To(Succeed())
	}
	DeferCleanup(func(ctx context.Context) {
		for _, o := range objs {
			o.SetResourceVersion("")
			o.SetUID("")
			o.SetCreationTimestamp(metav1.Time{})
			o.SetManagedFields(nil)
			o.SetGeneration(0)
			Expect(k8s.Create(ctx, o)).To(Succeed())
		}
	})
}

// helmInstall installs the chart from this repository with the helm CLI
// make test builds. A post-renderer (kustomize, the pattern Helm documents)
// changes the one thing this cluster cannot give the pod, its ServiceAccount
// token: envtest's API server mounts none (its ServiceAccount admission
// plugin is off), and the pod's in-cluster address (the kubernetes
// Service's cluster IP) has no kube-proxy behind it. The server reads the
// API server with the node's kubeconfig instead (KUBECONFIG, a hostPath).
//
// Everything else is the chart's: the Deployment on the host network, its
// Service, the webhook configurations with the CA the chart generates, the
// RBAC, the configuration.
func helmInstall(ctx context.Context, values ...string) {
	GinkgoHelper()
	dir := filepath.Join(node.dir, "helm")
	Expect(os.MkdirAll(dir, 0o750)).To(Succeed())
	// The image's user (65532) reads the kubeconfig: a test cluster's
	// administrator, in the suite's temporary directory.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	data, err := os.ReadFile(filepath.Join(node.dir, "kubeconfig"))
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(kubeconfig, data, 0o644)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(fmt.Sprintf(postRenderPatch, kubeconfig)), 0o600)).To(Succeed())
	postRenderer := filepath.Join(dir, "post-render")
	Expect(os.WriteFile(postRenderer, []byte(fmt.Sprintf("#!/bin/sh\nset -e\ncat > %q\nexec %q build %q\n",
		filepath.Join(dir, "chart.yaml"), os.Getenv("KUSTOMIZE"), dir)), 0o700)).To(Succeed())
	args := []string{"install", chartRelease, filepath.Join("..", "..", "charts", "endpoint-policy"),
		"--namespace", chartNamespace, "--create-namespace", "--kubeconfig", filepath.Join(node.dir, "kubeconfig"),
		"--post-renderer", postRenderer}
	repo, tag, _ := strings.Cut(productImage, ":")
	for _, v := range []string{
		"hostNetwork=true", "webhook.bindAddress=hostIP",
		fmt.Sprintf("webhook.port=%d", chartWebhook), fmt.Sprintf("metrics.port=%d", chartMetrics), fmt.Sprintf("health.port=%d", chartHealth),
		"image.repository=" + repo, "image.tag=" + tag, "image.pullPolicy=Never",
		"replicaCount=1", "podDisruptionBudget.enabled=false",
		// No cert-manager here: the chart's own CA and serving certificate.
		"certManager.enabled=false",
	} {
		args = append(args, "--set", v)
	}
	for _, v := range values {
		args = append(args, "--set", v)
	}
	out, err := exec.Command(os.Getenv("HELM"), args...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "helm install: %s", out)
	DeferCleanup(func(ctx context.Context) {
		out, err := exec.Command(os.Getenv("HELM"), "uninstall", chartRelease, "--namespace", chartNamespace,
			"--kubeconfig", filepath.Join(node.dir, "kubeconfig")).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "helm uninstall: %s", out)
		// The garbage collector deletes the ReplicaSet and its pod; the
		// kubelet stops it, freeing the node's ports.
		Eventually(func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(k8s.List(ctx, pods, client.InNamespace(chartNamespace))).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty())
		}).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
	})
}

// postRenderPatch is the kustomization helm's post-renderer builds (see
// helmInstall).
const postRenderPatch = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [chart.yaml]
patches:
  - target: {kind: Deployment}
    patch: &kubeconfig |-
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: node-kubeconfig, hostPath: {path: %[1]s, type: File}}
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts/-
        value: {name: node-kubeconfig, mountPath: /etc/endpoint-policy/kubeconfig, readOnly: true}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBECONFIG, value: /etc/endpoint-policy/kubeconfig}
  - target: {kind: DaemonSet}
    patch: *kubeconfig
`

// kubeVIPDenial creates (dry run) a kube-vip DaemonSet of a release with
// the IPVS backend bug, which kube-vip-ipvs-backends denies by default,
// and returns the API server's error: "" when it was admitted.
func kubeVIPDenial(ctx context.Context) string {
	labels := map[string]string{"app.kubernetes.io/name": "kube-vip"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-vip"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{
					Name: "kube-vip", Image: kubeVIPImage, Args: []string{"manager"},
					Env: []corev1.EnvVar{{Name: "vip_arp", Value: "true"}, {Name: "address", Value: "10.0.0.100"},
						{Name: "cp_enable", Value: "true"}, {Name: "lb_enable", Value: "true"}, {Name: "lb_port", Value: "6443"}},
				}}},
			},
		},
	}
	if err := k8s.Create(ctx, ds, client.DryRunAll); err != nil {
		return err.Error()
	}
	return ""
}

// removePodNetwork runs a pod on the pod network, so that the CNI's bridge
// exists, deletes it, and removes the bridge: the pod network is gone.
func removePodNetwork(ctx context.Context) {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pod-network"},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{
			Name: "sleeper", Image: pauseImage, ImagePullPolicy: corev1.PullNever,
		}}},
	}
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(pod.Status.Phase).To(Equal(corev1.PodRunning))
		g.Expect(pod.Status.PodIP).To(HavePrefix("10.244.0."))
	}).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
	Expect(k8s.Delete(ctx, pod)).To(Succeed())
	Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}))
	}).WithTimeout(60*time.Second).WithPolling(time.Second).Should(BeTrue(), "the pod-network pod deleted")
	run("ip", "link", "delete", cniBridge)
	out, err := exec.Command("ip", "link", "show", cniBridge).CombinedOutput()
	Expect(err).To(HaveOccurred(), "the bridge is gone: %s", out)
}

// isReady says whether p's Ready condition is true.
func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podLogs returns, for a failure's message, the chart's pods as the API
// server has them (node, phase, conditions, containers' states) and the
// containers' logs the kubelet wrote.
func podLogs() string {
	var b strings.Builder
	pods := &corev1.PodList{}
	if err := k8s.List(context.Background(), pods, client.InNamespace(chartNamespace)); err != nil {
		fmt.Fprintf(&b, "listing the pods: %v\n", err)
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s on %q: %s %v %v\n", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
	}
	_ = filepath.WalkDir(filepath.Join(node.dir, "pods-logs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, chartNamespace) {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "\n%s:\n%s", p, data)
		}
		return nil
	})
	return b.String()
}
