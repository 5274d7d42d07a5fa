package node

import (
	"bufio"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/warnings"
)

// clientImage runs test/node/client, an in-cluster API client.
const clientImage = "endpoint-policy.test/client:1"

// nllb is where k0s's node-local balancer listens (DOMAIN.md §1).
const nllb = "127.0.0.1:7443"

var _ = Describe("the rewrite, for real (k0s #5740)", func() {
	It("points a client pinned to one control-plane address at the node-local balancer the agent verified: it keeps the API server when that address fails, an opted-out one loses it; without the balancer the pod is left as it is, with the warning", func(ctx context.Context) {
		apiServer := apiServerAddress()
		By("a node-local balancer on localhost:7443 (a TCP pass-through to the API server, as k0s's NLLB) whose certificate, the API server's, names localhost")
		balancer := startPassThrough(nllb, apiServer)
		By("the \"control-plane node\" the clients are pinned to: 127.0.0.2, another pass-through to the API server, which the test stops")
		pinned := startPassThrough("127.0.0.2:0", apiServer)

		importProductImage()
		importClientImage()
		startControllers()
		withoutSuiteWebhooks(ctx)
		By("helm install: the agent DaemonSet (checking every 2s), verification Required (the chart's default), hostNetwork: true, override: Always")
		// The "control-plane node" is a loopback address here, which the
		// default override (IPLiterals) keeps as a deliberate choice; a
		// real one's address is an IP literal it rewrites.
		helmInstall(ctx, "agent.interval=2s", "agent.heartbeat=10s", "config.policies.host-network-endpoint.override=Always")
		chartAnswers(ctx)

		By("the agent verifies localhost:7443 on the node: its Lease says so")
		Eventually(agentReport).WithArguments(ctx).WithTimeout(90 * time.Second).WithPolling(time.Second).Should(
			HaveField("Status()", hostnetwork.StatusVerified))

		By("two hostNetwork client DaemonSets pinned to 127.0.0.2 (KUBERNETES_SERVICE_HOST/PORT in their env, as Cilium's hard-coded k8sServiceHost): one opted out (endpoint-policy.io/exclude)")
		rewritten := runClient(ctx, "client", pinned.Addr().Port, false)
		optedOut := runClient(ctx, "client-opted-out", pinned.Addr().Port, true)
		Expect(env(rewritten)).To(And(HaveKeyWithValue("KUBERNETES_SERVICE_HOST", "localhost"), HaveKeyWithValue("KUBERNETES_SERVICE_PORT", "7443")),
			func() string {
				return "the pod rewritten to the verified balancer: " + podLogs() + eventsOf(ctx, rewritten)
			})
		Expect(env(optedOut)).To(HaveKeyWithValue("KUBERNETES_SERVICE_HOST", "127.0.0.2"), "the opted-out pod as its DaemonSet has it")
		for _, p := range []*corev1.Pod{rewritten, optedOut} {
			Eventually(clientLines).WithArguments(p, time.Time{}).WithTimeout(60*time.Second).WithPolling(time.Second).Should(
				ContainElement(HavePrefix("ok ")), "%s reaches the API server", p.Name)
		}

		By("the pinned address fails: the rewritten client keeps the API server, the opted-out one loses it")
		pinned.Stop()
		failed := time.Now()
		// A request in flight when it failed may still end either way.
		settled := failed.Add(3 * time.Second)
		Eventually(clientLines).WithArguments(rewritten, settled).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(
			And(atLeast(3), HaveEach(HavePrefix("ok https://localhost:7443"))))
		Eventually(clientLines).WithArguments(optedOut, settled).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(
			And(atLeast(3), HaveEach(HavePrefix("error https://127.0.0.2:"))))

		By("without the balancer: the agent's Lease says localhost:7443 is unreachable")
		balancer.Stop()
		Eventually(agentReport).WithArguments(ctx).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(
			HaveField("Checks", ContainElement(And(HaveField("Endpoint", "localhost:7443"), HaveField("Status", hostnetwork.StatusUnreachable)))))

		By("and a pinned pod is left as it is, with the warning")
		recorder := &warnings.Recorder{}
		cfg := *testEnv.Config
		cfg.WarningHandlerWithContext = recorder
		c, err := client.New(&cfg, client.Options{})
		Expect(err).NotTo(HaveOccurred())
		pod := clientPod("client-unverified", pinned.Addr().Port, false)
		var got []string
		Eventually(func(g Gomega) {
			p := pod.DeepCopy()
			got = recorder.During(func() { g.Expect(c.Create(ctx, p, client.DryRunAll)).To(Succeed()) })
			g.Expect(got).To(ContainElement(ContainSubstring("[host-network-endpoint] not rewritten: localhost:7443 is not verified on node(s) localhost: Unreachable")))
			g.Expect(env(p)).To(HaveKeyWithValue("KUBERNETES_SERVICE_HOST", "127.0.0.2"))
		}).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())
	})
})

// apiServerAddress is the envtest API server's host:port.
func apiServerAddress() string {
	GinkgoHelper()
	u, err := url.Parse(testEnv.Config.Host)
	Expect(err).NotTo(HaveOccurred())
	return u.Host
}

// importClientImage builds test/node/client statically (make build's
// flags) and imports its image into the node's containerd.
func importClientImage() {
	GinkgoHelper()
	dir := filepath.Join(node.dir, "client-image")
	bin := filepath.Join(dir, "client")
	cmd := exec.Command("go", "build", "-trimpath", "-gcflags=all=-dwarf=false", "-o", bin, "./client")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build ./client: %s", out)
	run("go", "-C", "../../hack/image", "run", ".", "--binary", bin, "--out", dir, "--tag", clientImage)
	run("ctr", "-a", node.socket, "-n", "k8s.io", "images", "import", filepath.Join(dir, "endpoint-policy.tar"))
}

// agentReport is the node agent's report in its Lease.
func agentReport(ctx context.Context) (hostnetwork.Report, error) {
	l := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: chartNamespace, Name: hostnetwork.LeaseName(nodeName)}, l); err != nil {
		return hostnetwork.Report{}, err
	}
	r, _, err := hostnetwork.ReportOf(l)
	return r, err
}

// clientPod is a hostNetwork pod of test/node/client pinned to
// 127.0.0.2:port, with the ServiceAccount token and CA the ServiceAccount
// admission plugin would mount (envtest's API server runs without it).
func clientPod(name string, port int, optOut bool) *corev1.Pod {
	labels := map[string]string{"app": name}
	if optOut {
		labels[policy.ExcludeLabel] = "true"
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			// kube-controller-manager's serviceaccount controller makes it.
			ServiceAccountName: "default",
			HostNetwork:        true,
			DNSPolicy:          corev1.DNSClusterFirstWithHostNet,
			Containers: []corev1.Container{{
				Name: "client", Image: clientImage, ImagePullPolicy: corev1.PullNever,
				Env:          []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.2"}, {Name: "KUBERNETES_SERVICE_PORT", Value: strconv.Itoa(port)}},
				VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				},
			}}}},
		},
	}
}

// runClient creates a DaemonSet of clientPod and returns its pod once it
// runs; the DaemonSet is deleted when the spec ends.
func runClient(ctx context.Context, name string, port int, optOut bool) *corev1.Pod {
	GinkgoHelper()
	pod := clientPod(name, port, optOut)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec},
		},
	}
	Expect(k8s.Create(ctx, ds)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		Expect(k8s.Delete(ctx, ds)).To(Succeed())
		Eventually(func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(k8s.List(ctx, pods, client.InNamespace(pod.Namespace), client.MatchingLabels{"app": name})).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty())
		}).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
	})
	var running *corev1.Pod
	Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8s.List(ctx, pods, client.InNamespace(pod.Namespace), client.MatchingLabels{"app": name})).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(1))
		g.Expect(pods.Items[0].Status.Phase).To(Equal(corev1.PodRunning))
		running = &pods.Items[0]
	}).WithTimeout(60*time.Second).WithPolling(time.Second).Should(Succeed(), func() string { return name + "'s pod running; events: " + eventsOf(ctx, ds) })
	return running
}

// atLeast matches a slice of n or more lines.
func atLeast(n int) OmegaMatcher {
	return WithTransform(func(lines []string) int { return len(lines) }, BeNumerically(">=", n))
}

// eventsOf returns the Events about obj, for a failure's message.
func eventsOf(ctx context.Context, obj client.Object) string {
	events := &eventsv1.EventList{}
	if err := k8s.List(ctx, events, client.InNamespace(obj.GetNamespace())); err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range events.Items {
		if e.Regarding.Name == obj.GetName() {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return strings.Join(out, "; ")
}

// env is the first container's literal environment.
func env(p *corev1.Pod) map[string]string {
	out := map[string]string{}
	for _, e := range p.Spec.Containers[0].Env {
		out[e.Name] = e.Value
	}
	return out
}

// clientLines returns the client's lines (its container log, as the kubelet
// writes it: "<time> stdout F <line>") written after since.
func clientLines(p *corev1.Pod, since time.Time) ([]string, error) {
	f, err := os.Open(filepath.Join(node.dir, "pods-logs", p.Namespace+"_"+p.Name+"_"+string(p.UID), "client", "0.log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.SplitN(s.Text(), " ", 4)
		if len(fields) < 4 {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, fields[0])
		if err != nil || !at.After(since) {
			continue
		}
		lines = append(lines, fields[3])
	}
	return lines, s.Err()
}
