package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/loopback"
)

// The node agent and the webhook's per-node decision, with agents as
// processes (`endpoint-policy agent`) under made-up node names, each given
// the configuration that says what answers on "its" node. Every endpoint is
// on 127.0.0.1: a TCP proxy to the envtest API server (a node-local
// balancer), TLS servers with a certificate that lacks the host or comes
// from another CA, servers that answer /readyz with 500 or 401, and a port
// nothing listens on.

const (
	agentServiceAccount = "endpoint-policy-agent"
	// The agents' timing in these specs: a report is stale after three
	// heartbeats, 6s.
	agentInterval, agentHeartbeat = time.Second, 2 * time.Second
)

// endpoints are the loopback endpoints the specs check.
type endpoints struct {
	balancer, balancer2 string // TCP proxies to the API server
	wrongHost           string // "localhost:<port>": a certificate from the cluster CA for 127.0.0.1 only
	otherCA             string // a certificate from a CA the cluster does not know
	notReady            string // /readyz answers 500
	unauthorized        string // /readyz answers 401
	closed              string // nothing listens
	clusterCA           *loopback.CA
}

var _ = Describe("host-network-endpoint verification", Ordered, func() {
	var (
		eps        endpoints
		kubeconfig string // the agent's ServiceAccount, trusting the cluster CA and clusterCA
	)
	BeforeAll(func(ctx context.Context) {
		eps = startEndpoints()
		kubeconfig = agentKubeconfig(ctx, eps.clusterCA)
		DeferCleanup(func(ctx context.Context) {
			Expect(k8s.DeleteAllOf(ctx, &coordinationv1.Lease{}, client.InNamespace(serverNamespace),
				client.MatchingLabels(hostnetwork.AgentLeaseLabels()))).To(Succeed())
		})
	})

	It("publishes every endpoint's status in the node's Lease, as the agent's ServiceAccount, and writes it once per heartbeat", func(ctx context.Context) {
		startAgent(kubeconfig, "ep-node-status", agentSettings(eps.balancer, eps.wrongHost, eps.otherCA, eps.notReady, eps.unauthorized, eps.closed))
		lease := &coordinationv1.Lease{}
		key := client.ObjectKey{Namespace: serverNamespace, Name: hostnetwork.LeaseName("ep-node-status")}
		Eventually(func(g Gomega) []hostnetwork.Status {
			g.Expect(k8s.Get(ctx, key, lease)).To(Succeed())
			return statusesOf(g, lease)
		}).WithTimeout(settle).WithPolling(polling).Should(Equal([]hostnetwork.Status{
			hostnetwork.StatusVerified, hostnetwork.StatusCertificateNotValidForHost, hostnetwork.StatusUnknownAuthority,
			hostnetwork.StatusNotReady, hostnetwork.StatusUnauthorized, hostnetwork.StatusUnreachable,
		}))
		Expect(lease.Labels).To(Equal(hostnetwork.AgentLeaseLabels()))
		Expect(lease.Spec.HolderIdentity).To(HaveValue(Equal("ep-node-status")))
		Expect(lease.Spec.LeaseDurationSeconds).To(HaveValue(BeEquivalentTo(3 * agentHeartbeat / time.Second)))
		Expect(lease.Spec.RenewTime).NotTo(BeNil())
		Expect(lease.Annotations).To(HaveKeyWithValue(hostnetwork.EndpointAnnotation, eps.balancer))

		var checks []hostnetwork.Check
		Expect(json.Unmarshal([]byte(lease.Annotations[hostnetwork.ResultsAnnotation]), &checks)).To(Succeed())
		Expect(checks[1].Message).To(ContainSubstring(`not valid for "localhost"`))
		Expect(checks[1].Message).To(ContainSubstring("ClusterConfiguration.apiServer.certSANs"))
		Expect(checks[2].Message).To(ContainSubstring("the cluster CA did not sign"))
		Expect(checks[5].Message).To(ContainSubstring("connection refused"))

		By("counting the Lease's writes while nothing changes: one per heartbeat")
		window := 3 * agentHeartbeat
		w, err := k8sWatch.Watch(ctx, &coordinationv1.LeaseList{}, client.InNamespace(serverNamespace),
			client.MatchingFields{"metadata.name": key.Name})
		Expect(err).NotTo(HaveOccurred())
		writes := 0
		timeout := time.After(window)
	count:
		for {
			select {
			case ev := <-w.ResultChan():
				if ev.Type == watch.Modified {
					writes++
				}
			case <-timeout:
				break count
			}
		}
		w.Stop()
		AddReportEntry("agent Lease writes", fmt.Sprintf("%d writes in %s with a %s heartbeat and a %s interval", writes, window, agentHeartbeat, agentInterval))
		// 3 heartbeats in the window, give or take one for the phase and the
		// interval's 10% jitter; never one per interval (6).
		Expect(writes).To(BeNumerically(">=", 2))
		Expect(writes).To(BeNumerically("<=", 4))
	})

	// The endpoint-truth issue's command line, as written: no --timeout (its
	// 5s default must follow the 1s interval) and the namespace from
	// $POD_NAMESPACE, as the chart sets it.
	It("runs as documented: agent --config F --kubeconfig K --node-name N --interval 1s --heartbeat 10s", func(ctx context.Context) {
		configPath := filepath.Join(GinkgoT().TempDir(), "config.yaml")
		Expect(os.WriteFile(configPath, []byte(agentSettings(eps.balancer)), 0o600)).To(Succeed())
		cmd := exec.Command(serverBinary(), strings.Fields(
			"agent --config "+configPath+" --kubeconfig "+kubeconfig+" --node-name ep-node-documented --interval 1s --heartbeat 10s")...)
		cmd.Env = append(os.Environ(), "POD_NAMESPACE="+serverNamespace)
		startProcess(cmd, "agent ep-node-documented")
		lease := &coordinationv1.Lease{}
		key := client.ObjectKey{Namespace: serverNamespace, Name: hostnetwork.LeaseName("ep-node-documented")}
		Eventually(func(g Gomega) []hostnetwork.Status {
			g.Expect(k8s.Get(ctx, key, lease)).To(Succeed())
			return statusesOf(g, lease)
		}).WithTimeout(settle).WithPolling(polling).Should(Equal([]hostnetwork.Status{hostnetwork.StatusVerified}))
		Expect(lease.Spec.LeaseDurationSeconds).To(HaveValue(BeEquivalentTo(30)))
	})

	Context("with verification Required", func() {
		BeforeAll(func(ctx context.Context) {
			for name, labels := range map[string]map[string]string{
				"ep-node-a": {"pool": "verified", "mixed": "true"},
				"ep-node-b": {"pool": "unreachable", "mixed": "true"},
				"ep-node-c": {"pool": "no-agent"},
			} {
				createNode(ctx, name, labels)
			}
			writeConfig(configYAML(func(c *config.PolicyConfiguration) {
				s := hostNetworkSettings(c)
				s.Verification = hostnetwork.VerificationRequired
				s.Host, s.Port = splitEndpoint(eps.balancer)
			}))
			DeferCleanup(func() { writeConfig(configYAML(nil)) })
		})

		It("rewrites a pod only to an endpoint verified on every node it can run on", func(ctx context.Context) {
			ns := newNamespace(ctx, nil)
			agentA := startAgent(kubeconfig, "ep-node-a", agentSettings(eps.balancer))
			startAgent(kubeconfig, "ep-node-b", agentSettings(eps.closed))
			host, port := splitEndpoint(eps.balancer)
			rewritten := envVars(envHost, host, envPort, strconv.Itoa(int(port)))

			By("a pod bound to the verified node")
			Eventually(func() []corev1.EnvVar {
				p := boundPod(ns, "ep-node-a")
				Expect(k8s.Create(ctx, p, client.DryRunAll)).To(Succeed())
				return p.Spec.Containers[0].Env
			}).WithTimeout(settle).WithPolling(polling).Should(Equal(rewritten), "the server has read node a's Lease")
			p := boundPod(ns, "ep-node-a")
			Expect(k8s.Create(ctx, p)).To(Succeed())
			Expect(p.Annotations).To(HaveKeyWithValue(endpointAnnotation, eps.balancer))

			By("a pod bound to the node where nothing answers")
			Eventually(func() []string {
				return clientWarnings.During(func() {
					p := boundPod(ns, "ep-node-b")
					Expect(k8s.Create(ctx, p)).To(Succeed())
					Expect(p.Spec.Containers[0].Env).To(Equal(envVars(envHost, "10.0.1.16", envPort, "6443")), "not rewritten")
				})
			}).WithTimeout(settle).WithPolling(polling).Should(ContainElement(And(
				HavePrefix("[host-network-endpoint] not rewritten: "+eps.balancer+" is not verified on node(s) ep-node-b: Unreachable: "),
				ContainSubstring("connection refused"))))
			Expect(counter("endpoint_policy_admission_decisions_total",
				map[string]string{"policy": "host-network-endpoint", "action": "unverified"})).To(BeNumerically(">", 0))

			By("DaemonSet pods, which name their node in node affinity")
			p = daemonSetPodFor(ns, "ep-node-a")
			Expect(k8s.Create(ctx, p)).To(Succeed())
			Expect(p.Spec.Containers[0].Env).To(Equal(rewritten))
			p = daemonSetPodFor(ns, "ep-node-c")
			Expect(clientWarnings.During(func() { Expect(k8s.Create(ctx, p)).To(Succeed()) })).To(ContainElement(ContainSubstring("not verified on node(s) ep-node-c: NoReport")))
			Expect(p.Annotations).NotTo(HaveKey(endpointAnnotation))

			By("unbound pods: every node their selector admits must be verified")
			p = unboundPod(ns, map[string]string{"pool": "verified"})
			Expect(k8s.Create(ctx, p)).To(Succeed())
			Expect(p.Spec.Containers[0].Env).To(Equal(rewritten))
			p = unboundPod(ns, map[string]string{"mixed": "true"})
			Expect(clientWarnings.During(func() { Expect(k8s.Create(ctx, p)).To(Succeed()) })).To(ContainElement(ContainSubstring("not verified on node(s) ep-node-b: Unreachable")))
			Expect(p.Annotations).NotTo(HaveKey(endpointAnnotation))

			// The gauge follows the reports once a second: wait for both.
			Eventually(func() []float64 {
				return []float64{counter("endpoint_policy_endpoint_nodes", map[string]string{"status": "Verified"}),
					counter("endpoint_policy_endpoint_nodes", map[string]string{"status": "Unreachable"})}
			}).WithTimeout(settle).WithPolling(polling).Should(HaveEach(BeNumerically(">=", 1)))

			By("a report that went stale: node a's agent stopped")
			agentA.stop()
			Eventually(func() []string {
				return clientWarnings.During(func() { Expect(k8s.Create(ctx, boundPod(ns, "ep-node-a"), client.DryRunAll)).To(Succeed()) })
			}).WithTimeout(4 * agentHeartbeat * 3).WithPolling(polling).Should(ContainElement(ContainSubstring("not verified on node(s) ep-node-a: Stale")))
		})

		It("under host: auto, rewrites each pod to its node's verified endpoint, and a pod whose nodes differ not at all", func(ctx context.Context) {
			ns := newNamespace(ctx, nil)
			createNode(ctx, "ep-node-x", map[string]string{"pool": "auto"})
			createNode(ctx, "ep-node-y", map[string]string{"pool": "auto"})
			writeConfig(configYAML(func(c *config.PolicyConfiguration) {
				s := hostNetworkSettings(c)
				s.Verification, s.Host = hostnetwork.VerificationRequired, hostnetwork.HostAuto
			}))
			// Node x runs one balancer, node y another.
			startAgent(kubeconfig, "ep-node-x", autoSettings(eps.closed, eps.balancer))
			startAgent(kubeconfig, "ep-node-y", autoSettings(eps.closed, eps.balancer2))

			for node, endpoint := range map[string]string{"ep-node-x": eps.balancer, "ep-node-y": eps.balancer2} {
				Eventually(func() map[string]string {
					p := boundPod(ns, node)
					Expect(k8s.Create(ctx, p, client.DryRunAll)).To(Succeed())
					return p.Annotations
				}).WithTimeout(settle).WithPolling(polling).Should(HaveKeyWithValue(endpointAnnotation, endpoint), node)
			}
			p := unboundPod(ns, map[string]string{"pool": "auto"})
			Expect(clientWarnings.During(func() { Expect(k8s.Create(ctx, p)).To(Succeed()) })).To(ContainElement(ContainSubstring("instead")))
			Expect(p.Annotations).NotTo(HaveKey(endpointAnnotation))
		})
	})
})

// splitEndpoint splits "host:port".
func splitEndpoint(e string) (string, int32) {
	GinkgoHelper()
	host, port, err := net.SplitHostPort(e)
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(port)
	Expect(err).NotTo(HaveOccurred())
	return host, int32(n)
}

// agentSettings is a configuration whose endpoint is the first, and whose
// candidates are the rest.
func agentSettings(endpoint string, candidates ...string) string {
	return configYAML(func(c *config.PolicyConfiguration) {
		s := hostNetworkSettings(c)
		s.Verification = hostnetwork.VerificationRequired
		s.Host, s.Port = splitEndpoint(endpoint)
		s.Candidates = append([]string{}, candidates...) // none: not the defaults
	})
}

// autoSettings is a host: auto configuration with these candidates.
func autoSettings(candidates ...string) string {
	return configYAML(func(c *config.PolicyConfiguration) {
		s := hostNetworkSettings(c)
		s.Verification, s.Host, s.Candidates = hostnetwork.VerificationRequired, hostnetwork.HostAuto, candidates
	})
}

func statusesOf(g Gomega, l *coordinationv1.Lease) []hostnetwork.Status {
	var checks []hostnetwork.Check
	g.Expect(json.Unmarshal([]byte(l.Annotations[hostnetwork.ResultsAnnotation]), &checks)).To(Succeed())
	out := make([]hostnetwork.Status, len(checks))
	for i, c := range checks {
		out[i] = c.Status
	}
	return out
}

// createNode creates a Node that pods can be scheduled to: the API server's
// TaintNodesByCondition admission gives a new Node the not-ready taint,
// which a kubelet would have lifted; here the spec does.
func createNode(ctx context.Context, name string, labels map[string]string) {
	GinkgoHelper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	Expect(k8s.Create(ctx, n)).To(Succeed())
	DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, n))).To(Succeed()) })
	n.Spec.Taints = nil
	Expect(k8s.Update(ctx, n)).To(Succeed())
}

// pinnedPod is a hostNetwork pod pinned to a control-plane IP.
func pinnedPod(ns string) *corev1.Pod {
	return pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
}

func boundPod(ns, node string) *corev1.Pod {
	p := pinnedPod(ns)
	p.Spec.NodeName = node
	return p
}

// daemonSetPodFor is a pod as the DaemonSet controller creates it for node
// (pkg/controller/daemon/util.ReplaceDaemonSetPodNodeNameNodeAffinity).
func daemonSetPodFor(ns, node string) *corev1.Pod {
	p := pinnedPod(ns)
	p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
		}}},
	}}
	p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	return p
}

// unboundPod is a Deployment's pod: no node yet, a nodeSelector.
func unboundPod(ns string, selector map[string]string) *corev1.Pod {
	p := pinnedPod(ns)
	p.Spec.NodeSelector = selector
	return p
}

// agentProcess is a running `endpoint-policy agent`.
type agentProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (a *agentProcess) stop() {
	_ = a.cmd.Process.Kill()
	<-a.exited
}

// startAgent runs an agent for node with the configuration settings, until
// the spec ends.
func startAgent(kubeconfig, node, settings string) *agentProcess {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	configPath := filepath.Join(dir, "config.yaml")
	Expect(os.WriteFile(configPath, []byte(settings), 0o600)).To(Succeed())
	return startProcess(exec.Command(serverBinary(), "agent",
		"--kubeconfig="+kubeconfig, "--config="+configPath, "--node-name="+node, "--namespace="+serverNamespace,
		"--interval="+agentInterval.String(), "--heartbeat="+agentHeartbeat.String(), "--timeout=1s"), "agent "+node)
}

// startProcess starts cmd, keeps its output for the report of a failed spec
// under name, and kills it when the spec ends.
func startProcess(cmd *exec.Cmd, name string) *agentProcess {
	GinkgoHelper()
	logs := &syncBuffer{}
	a := &agentProcess{cmd: cmd, exited: make(chan struct{})}
	a.cmd.Stdout, a.cmd.Stderr = logs, logs
	Expect(a.cmd.Start()).To(Succeed())
	go func() {
		_ = a.cmd.Wait()
		close(a.exited)
	}()
	DeferCleanup(func() {
		a.stop()
		if CurrentSpecReport().Failed() {
			AddReportEntry("logs of "+name, logs.String())
		}
	})
	return a
}

// agentKubeconfig installs config/agent's ServiceAccount and RBAC (the
// chart's: test/chart keeps them equal) and writes a kubeconfig that
// authenticates as that ServiceAccount and trusts, beside the API server's
// CA, extra: a cluster CA bundle of two CAs, as during a CA rotation.
func agentKubeconfig(ctx context.Context, extra *loopback.CA) string {
	GinkgoHelper()
	for _, obj := range readObjects(filepath.Join("..", "..", "config", "agent", "agent.yaml")) {
		if obj.GetKind() == "DaemonSet" {
			continue
		}
		obj.SetNamespace(serverNamespace)
		if err := k8s.Create(ctx, obj); err != nil {
			Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
		}
	}
	u, err := testEnv.AddUser(envtest.User{
		Name:   serviceaccount.MakeUsername(serverNamespace, agentServiceAccount),
		Groups: serviceaccount.MakeGroupNames(serverNamespace),
	}, nil)
	Expect(err).NotTo(HaveOccurred())
	raw, err := u.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	kc, err := clientcmd.Load(raw)
	Expect(err).NotTo(HaveOccurred())
	for _, c := range kc.Clusters {
		c.CertificateAuthorityData = append(append([]byte{}, c.CertificateAuthorityData...), extra.PEM...)
	}
	path := filepath.Join(GinkgoT().TempDir(), "agent.kubeconfig")
	Expect(clientcmd.WriteToFile(*kc, path)).To(Succeed())
	return path
}

// startEndpoints starts the loopback endpoints, until the container ends.
func startEndpoints() endpoints {
	GinkgoHelper()
	apiServer, err := url.Parse(restConfig.Host)
	Expect(err).NotTo(HaveOccurred())
	clusterCA, err := loopback.NewCA("endpoint-policy-test-cluster-ca")
	Expect(err).NotTo(HaveOccurred())
	otherCA, err := loopback.NewCA("another-ca")
	Expect(err).NotTo(HaveOccurred())
	eps := endpoints{clusterCA: clusterCA}
	eps.balancer = serve(loopback.Proxy(apiServer.Host))
	eps.balancer2 = serve(loopback.Proxy(apiServer.Host))
	_, port, _ := net.SplitHostPort(readyz(clusterCA, http.StatusOK))
	eps.wrongHost = net.JoinHostPort("localhost", port)
	eps.otherCA = readyz(otherCA, http.StatusOK)
	eps.notReady = readyz(clusterCA, http.StatusInternalServerError)
	eps.unauthorized = readyz(clusterCA, http.StatusUnauthorized)
	eps.closed = freeAddr()
	return eps
}

// readyz serves /readyz with status and a certificate from ca for
// 127.0.0.1 only.
func readyz(ca *loopback.CA, status int) string {
	GinkgoHelper()
	cert, err := ca.Issue(nil, []net.IP{net.ParseIP("127.0.0.1")})
	Expect(err).NotTo(HaveOccurred())
	return serve(loopback.ServeReadyz(cert, status))
}

// serve keeps s until the container ends, and returns its address.
func serve(s *loopback.Server, err error) string {
	GinkgoHelper()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(s.Close)
	return s.Addr()
}
