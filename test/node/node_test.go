// Package node is the real-node suite: a kubelet built from the pinned
// Kubernetes module and containerd from Debian, registered to an envtest
// kube-apiserver, on this machine, with endpoint-policy serving admission
// and the audit in the suite's process; one spec installs the chart on the
// node too (hostnetwork_test.go). It needs root, containerd, runc and the CNI plugins;
// ENDPOINT_POLICY_NODE_ASSETS names the directory with the kubelet (make
// test-node and make test set it). Without them it skips, except under
// CI=true. Everything it makes outside its temporary directory (cgroups,
// sysctls, mounts, /var/lib/kubelet, the CNI bridge, the netfilter rules)
// is removed after, also when a spec fails (realNode.stop).
package node

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/server"
)

func TestNode(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "endpoint-policy on a real node (kubelet, containerd)")
}

var (
	testEnv *envtest.Environment
	k8s     client.Client
	node    *realNode
	// caFile is the cluster CA's certificate (kube-controller-manager's
	// --root-ca-file).
	caFile string
)

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	if missing := missingPrerequisites(); missing != "" {
		if os.Getenv("CI") == "true" {
			Fail("the real node suite is required under CI=true: " + missing + " (.ci/run installs containerd, runc and the CNI plugins; make test builds the kubelet)")
		}
		Skip("the real node needs " + missing + ": make test-node (as root, with Debian's containerd, runc and containernetworking-plugins)")
	}
	testEnv = &envtest.Environment{
		BinaryAssetsDirectory: os.Getenv("KUBEBUILDER_ASSETS"),
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join("..", "..", "config", "webhook")}},
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "charts", "endpoint-policy", "files", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	apiServer := testEnv.ControlPlane.GetAPIServer()
	apiServer.CertDir = GinkgoT().TempDir()
	apiServer.CA, caFile = apiServerCerts(apiServer.CertDir)
	api := apiServer.Configure()
	// The API server's address is loopback: no endpoint reconciler (it
	// refuses loopback), and the kubelet is reached by its name.
	api.Set("endpoint-reconciler-type", "none")
	api.Set("kubelet-preferred-address-types", "Hostname")
	// kube-proxy runs privileged, as kubeadm runs it.
	api.Set("allow-privileged", "true")
	// Webhooks behind a Service are called at its endpoints' addresses (the
	// node's, for the chart's install on the host network): there is no
	// kube-proxy for the Service's cluster IP beside the API server.
	api.Set("enable-aggregator-routing", "true")
	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8s, err = client.New(cfg, client.Options{})
	Expect(err).NotTo(HaveOccurred())

	admin, err := testEnv.AddUser(envtest.User{Name: "node-admin", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := admin.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	startServer(cfg)
	node = startNode(GinkgoT().TempDir(), kubeconfig)
	DeferCleanup(node.stop)
	Eventually(func(g Gomega) {
		n := &corev1.Node{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: nodeName}, n)).To(Succeed())
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		g.Expect(ready).To(BeTrue(), "node conditions: %v", n.Status.Conditions)
	}).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
})

// apiServerCerts writes the API server's serving certificate and key, and
// its ServiceAccount signing key, into envtest's certificate directory,
// which it then uses as they are, and returns the CA's certificate and its
// file. envtest's own names localhost and 127.0.0.1; this one 127.0.0.2
// too: the "control-plane node" a pinned client dials (rewrite_test.go),
// whose certificate names its address, as a real one's does.
func apiServerCerts(dir string) ([]byte, string) {
	GinkgoHelper()
	certs, key, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("127.0.0.2")}, nil)
	Expect(err).NotTo(HaveOccurred())
	// The serving certificate, then the CA's.
	_, rest := pem.Decode(certs)
	ca, _ := pem.Decode(rest)
	Expect(ca).NotTo(BeNil(), "the CA's certificate after the serving one")
	caPEM := pem.EncodeToMemory(ca)
	saKey, err := keyutil.MakeEllipticPrivateKeyPEM()
	Expect(err).NotTo(HaveOccurred())
	for name, data := range map[string][]byte{
		"apiserver.crt": certs, "apiserver.key": key, "ca.crt": caPEM,
		// --service-account-key-file takes the private key as well.
		"sa-signer.key": saKey, "sa-signer.crt": saKey,
	} {
		Expect(os.WriteFile(filepath.Join(dir, name), data, 0o600)).To(Succeed())
	}
	return caPEM, filepath.Join(dir, "ca.crt")
}

// missingPrerequisites names what the real node needs and this machine
// lacks, "" when nothing.
func missingPrerequisites() string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		missing = append(missing, "the CNI plugins (/usr/lib/cni)")
	}
	for _, env := range []string{"HELM", "KUSTOMIZE"} {
		if _, err := os.Stat(os.Getenv(env)); os.Getenv(env) == "" || err != nil {
			missing = append(missing, env+" (the chart's install; make test builds it)")
		}
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("ENDPOINT_POLICY_SIM_ASSETS"), "kube-controller-manager")); err != nil {
		missing = append(missing, "kube-controller-manager in ENDPOINT_POLICY_SIM_ASSETS")
	}
	if _, err := exec.LookPath("make"); err != nil {
		missing = append(missing, "make (make image)")
	}
	if assets := os.Getenv("ENDPOINT_POLICY_NODE_ASSETS"); assets == "" {
		missing = append(missing, "ENDPOINT_POLICY_NODE_ASSETS (the kubelet's directory)")
	} else {
		for _, bin := range []string{"kubelet", "kube-proxy"} {
			if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
				missing = append(missing, "the "+bin+" in ENDPOINT_POLICY_NODE_ASSETS")
			}
		}
	}
	return strings.Join(missing, ", ")
}

// nodeName: the kubelet refuses a loopback --node-ip; the API server reaches
// it by this name (--kubelet-preferred-address-types=Hostname).
const nodeName = "localhost"

// startServer runs endpoint-policy serve in the suite's process, as the
// integration suite does: the webhooks envtest registers (URL, loopback),
// the background audit, the built-in configuration.
func startServer(cfg *rest.Config) {
	GinkgoHelper()
	wio := testEnv.WebhookInstallOptions
	opts := server.DefaultOptions()
	opts.WebhookHost, opts.WebhookPort, opts.CertDir = wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	opts.LeaderElect, opts.Namespace, opts.ShutdownDelay = false, "endpoint-policy", 0
	Expect(k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opts.Namespace}})).To(Succeed())
	srv, err := server.New(opts)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(logf.IntoContext(ctx, logf.Log), cfg) }()
	DeferCleanup(func() {
		cancel()
		Eventually(done).WithTimeout(30 * time.Second).Should(Receive(BeNil()))
	})
}

var _ = Describe("static pods and their mirror pods (kubeadm DHCP, kubespray #11423)", func() {
	It("admits the kubelet's mirror pods, warns with an Event, and the audit reports what check says of the directory", func(ctx context.Context) {
		By("kubeadm-shaped kube-apiserver and kube-vip manifests in the kubelet's staticPodPath")
		for name, manifest := range staticManifests(nodeAddress(ctx)) {
			Expect(os.WriteFile(filepath.Join(node.manifests, name+".yaml"), []byte(manifest), 0o600)).To(Succeed())
		}
		mirrors := map[string]*corev1.Pod{}
		Eventually(func(g Gomega) {
			for _, name := range []string{"kube-apiserver", "kube-vip"} {
				p := &corev1.Pod{}
				g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: name + "-" + nodeName}, p)).To(Succeed())
				g.Expect(p.Annotations).To(HaveKey(policy.MirrorPodAnnotation))
				g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning), "%s", name)
				mirrors[name] = p
			}
		}).WithTimeout(90*time.Second).WithPolling(time.Second).Should(Succeed(), "the mirror pods, admitted and running")

		By("check on the directory: what each static pod violates")
		in, err := check.Read([]string{node.manifests}, nil)
		Expect(err).NotTo(HaveOccurred())
		in.Objects = append(in.Objects, check.Object{Source: "node", Object: nodeObject(ctx)})
		fromCheck := map[string][]string{}
		for _, f := range check.Check(in, defaultEngine()).Findings {
			// One finding per probe; the audit's result is per policy.
			if mirror := f.Name + "-" + nodeName; !slices.Contains(fromCheck[mirror], string(f.Policy)) {
				fromCheck[mirror] = append(fromCheck[mirror], string(f.Policy))
			}
		}
		Expect(fromCheck).To(HaveKeyWithValue("kube-vip-"+nodeName, ContainElement("kube-vip-ipvs-backends")))
		Expect(fromCheck).To(HaveKeyWithValue("kube-apiserver-"+nodeName, ContainElement("apiserver-probe-host")))

		By("each mirror pod has a Warning Event per policy it violates: admitted, never denied")
		for name, p := range mirrors {
			Eventually(func(g Gomega) {
				events := &eventsv1.EventList{}
				g.Expect(k8s.List(ctx, events, client.InNamespace("kube-system"))).To(Succeed())
				var got []string
				for _, e := range events.Items {
					if e.Regarding.UID == p.UID && e.Reason == policy.EventReason {
						got = append(got, strings.TrimPrefix(strings.SplitN(e.Note, "]", 2)[0], "["))
					}
				}
				g.Expect(got).To(ContainElements(fromCheck[p.Name]))
			}).WithTimeout(30*time.Second).WithPolling(time.Second).Should(Succeed(), name)
		}

		By("the audit's report: the same policies, each a warning (a mirror pod is never denied)")
		Eventually(func(g Gomega) {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(audit.ReportGVK)
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: audit.ReportName}, u)).To(Succeed())
			results, _, _ := unstructured.NestedSlice(u.Object, "results")
			fromAudit := map[string][]string{}
			for _, r := range results {
				m := r.(map[string]any)
				ref := m["resources"].([]any)[0].(map[string]any)
				g.Expect(m["result"]).To(Equal("warn"), "%v", m)
				fromAudit[ref["name"].(string)] = append(fromAudit[ref["name"].(string)], m["policy"].(string))
			}
			for name, policies := range fromCheck {
				g.Expect(fromAudit[name]).To(ConsistOf(policies), name)
			}
		}).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(Succeed())
	})
})

// staticManifests are a kubeadm kube-apiserver manifest (its probes on the
// node's address, its --advertise-address another's) and a kube-vip one of
// an affected release (kube-vip #875), each running the sleeper under its
// upstream image name: the kubelet runs them, the policies read them.
func staticManifests(nodeIP string) map[string]string {
	return map[string]string{
		"kube-apiserver": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
  labels: {component: kube-apiserver, tier: control-plane}
  annotations: {kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: "%[1]s:6443"}
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
    - name: kube-apiserver
      image: %[2]s
      imagePullPolicy: Never
      args: [--advertise-address=%[1]s, --secure-port=6443]
      livenessProbe:
        httpGet: {host: %[1]s, path: /livez, port: 6443, scheme: HTTPS}
        initialDelaySeconds: 3600
      readinessProbe:
        httpGet: {host: %[1]s, path: /readyz, port: 6443, scheme: HTTPS}
        initialDelaySeconds: 3600
`, nodeIP, kubeAPIServerImage),
		"kube-vip": fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: kube-vip, namespace: kube-system}
spec:
  hostNetwork: true
  containers:
    - name: kube-vip
      image: %s
      imagePullPolicy: Never
      args: [manager]
      env:
        - {name: vip_arp, value: "true"}
        - {name: address, value: 10.0.0.100}
        - {name: cp_enable, value: "true"}
        - {name: lb_enable, value: "true"}
        - {name: lb_port, value: "6443"}
`, kubeVIPImage),
	}
}

// nodeAddress is the node's InternalIP, as the kubelet reports it.
func nodeAddress(ctx context.Context) string {
	GinkgoHelper()
	for _, a := range nodeObject(ctx).Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	Fail("the node reports no InternalIP")
	return ""
}

func nodeObject(ctx context.Context) *corev1.Node {
	GinkgoHelper()
	n := &corev1.Node{}
	Expect(k8s.Get(ctx, client.ObjectKey{Name: nodeName}, n)).To(Succeed())
	n.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	return n
}

func defaultEngine() *policy.Engine {
	GinkgoHelper()
	e, err := config.Default().Engine()
	Expect(err).NotTo(HaveOccurred())
	return e
}
