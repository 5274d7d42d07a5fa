package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
)

// runCheck runs `endpoint-policy check` with args and returns its exit code,
// stdout and stderr.
func runCheck(args ...string) (int, string, string) {
	GinkgoHelper()
	cmd := exec.Command(serverBinary(), append([]string{"check"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	Expect(err).NotTo(HaveOccurred())
	return 0, stdout.String(), stderr.String()
}

// kubeconfigFor writes a kubeconfig for user in groups.
func kubeconfigFor(user string, groups ...string) string {
	GinkgoHelper()
	u, err := testEnv.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	Expect(err).NotTo(HaveOccurred())
	kc, err := u.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, kc, 0o600)).To(Succeed())
	return path
}

// whatIfVerdict is one object's verdict of one policy, as check and the audit
// both say it.
type whatIfVerdict struct{ Policy, Action, Kind, Name string }

var _ = Describe("check --cluster (what-if)", func() {
	It("says what a candidate configuration would do to what runs, as the audit does under it, and what changes against the configuration in force", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		const node = "ep-what-if-node"
		createNode(ctx, node, nil)
		By("the node agent's report: localhost:7443 verified on the node")
		lease, err := hostnetwork.NewLease(serverNamespace, hostnetwork.Report{Node: node, Endpoint: "localhost:7443", RenewTime: time.Now(),
			Checks: []hostnetwork.Check{{Endpoint: "localhost:7443", Status: hostnetwork.StatusVerified}}}, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		Expect(k8s.Create(ctx, lease)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, lease))).To(Succeed()) })

		By("what runs: created while the webhooks were not registered")
		kubeVIP := kubeVIPDaemonSet(ns, "v0.8.4") // kube-vip #875
		cilium := pod(ns, true, envVars(envHost, "10.0.1.16", envPort, "6443"))
		cilium.GenerateName, cilium.Spec.NodeName = "cilium-", node
		withoutWebhooks(ctx, func() {
			Expect(k8s.Create(ctx, kubeVIP)).To(Succeed())
			Expect(k8s.Create(ctx, cilium)).To(Succeed())
		})

		By("the configuration in force, in the server's ConfigMap: both policies in Audit")
		inForce := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: serverNamespace, Name: "endpoint-policy-config"},
			Data: map[string]string{"config.yaml": configYAML(func(c *config.PolicyConfiguration) {
				c.Policies[kubevip.ID].Mode, c.Policies[hostnetwork.ID].Mode = policy.Audit, policy.Audit
			})}}
		Expect(k8s.Create(ctx, inForce)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, inForce))).To(Succeed()) })

		By("the candidate: both in Enforce, host-network-endpoint with verification Required")
		candidateEdit := func(c *config.PolicyConfiguration) {
			hostNetworkSettings(c).Verification = hostnetwork.VerificationRequired
		}
		candidate := filepath.Join(GinkgoT().TempDir(), "candidate.yaml")
		Expect(os.WriteFile(candidate, []byte(configYAML(candidateEdit)), 0o600)).To(Succeed())

		admin := kubeconfigFor("what-if-admin", "system:masters")
		code, stdout, stderr := runCheck("--cluster", "--kubeconfig", admin, "--config", candidate, "-o", "json")
		Expect(code).To(Equal(1), "a deny: exit 1\nstderr: %s", stderr)
		var report check.Report
		Expect(json.Unmarshal([]byte(stdout), &report)).To(Succeed())
		fromCheck := map[whatIfVerdict]bool{}
		for _, f := range report.Findings {
			if f.Namespace == ns {
				fromCheck[whatIfVerdict{string(f.Policy), string(f.Action), f.Kind, f.Name}] = true
			}
		}
		Expect(fromCheck).To(Equal(map[whatIfVerdict]bool{
			{string(kubevip.ID), "deny", "DaemonSet", kubeVIP.Name}: true,
			// Rewritten: the agent verified the endpoint on its node.
			{string(hostnetwork.ID), "mutate", "Pod", cilium.Name}: true,
		}))
		Expect(report.InForce).To(Equal("endpoint-policy/endpoint-policy-config"))
		Expect(report.Changes).To(ContainElements(
			check.Change{Policy: kubevip.ID, Kind: "DaemonSet", Namespace: ns, Name: kubeVIP.Name, InForce: policy.ActionWarn, Candidate: policy.ActionDeny},
			check.Change{Policy: hostnetwork.ID, Kind: "Pod", Namespace: ns, Name: cilium.Name, InForce: policy.ActionWarn, Candidate: policy.ActionMutate},
		))
		Expect(report.Policies[kubevip.ID]).To(HaveKeyWithValue(policy.ActionDeny, BeNumerically(">=", 1)))

		By("read a page at a time (one object a page here), every page is read and counted on the progress line")
		var progress bytes.Buffer
		paged, err := check.ReadCluster(ctx, k8s, check.ClusterOptions{Namespace: serverNamespace, PageSize: 1, Progress: &progress})
		Expect(err).NotTo(HaveOccurred())
		names := map[string]bool{}
		for _, o := range paged.Objects {
			if o.Object.GetNamespace() == ns {
				names[o.Object.GetName()] = true
			}
		}
		Expect(names).To(HaveKey(kubeVIP.Name))
		Expect(names).To(HaveKey(cilium.Name))
		// Namespaces are many: the second page was read, and counted.
		Expect(progress.String()).To(ContainSubstring("listed 2 namespaces\n"))

		By("the audit, under the candidate, gives the same verdicts")
		useConfig(candidateEdit)
		Eventually(func(g Gomega) {
			r, err := policyReport(ctx, ns)()
			g.Expect(err).NotTo(HaveOccurred())
			fromAudit := map[whatIfVerdict]bool{}
			for _, res := range resultsOf(r) {
				fromAudit[whatIfVerdict{res.Policy, res.Action, res.Kind, res.Name}] = true
			}
			g.Expect(fromAudit).To(Equal(fromCheck))
		}).WithTimeout(settle).WithPolling(polling).Should(Succeed())

		By("the table says it per policy and what changes")
		kc, err := clientcmd.LoadFromFile(admin)
		Expect(err).NotTo(HaveOccurred())
		code, stdout, _ = runCheck("--cluster", "--kubeconfig", admin, "--context", kc.CurrentContext, "--config", candidate)
		Expect(code).To(Equal(1))
		Expect(stdout).To(SatisfyAll(ContainSubstring("By policy:"), ContainSubstring("What changes against the configuration in force (endpoint-policy/endpoint-policy-config)"),
			MatchRegexp(`warn\s+deny\s+kube-vip-ipvs-backends\s+DaemonSet `+ns+"/"+kubeVIP.Name)))
	})

	It("names the resource and the verb the credentials lack, never a partial result", func(ctx context.Context) {
		role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: "what-if-limited-"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "nodes", "pods"}, Verbs: []string{"get", "list"}},
		}}
		Expect(k8s.Create(ctx, role)).To(Succeed())
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "what-if-limited"}}}
		Expect(k8s.Create(ctx, binding)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, binding))).To(Succeed())
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, role))).To(Succeed())
		})
		limited := kubeconfigFor("what-if-limited")
		var code int
		var stdout, stderr string
		// RBAC caches take a moment to see the binding: until then even
		// pods are forbidden.
		Eventually(func() string {
			code, stdout, stderr = runCheck("--cluster", "--kubeconfig", limited)
			return stderr
		}).WithTimeout(settle).WithPolling(polling).Should(ContainSubstring(`cannot list deployments.apps in all namespaces: the credentials lack "list" on deployments.apps`))
		Expect(code).To(Equal(2))
		Expect(stdout).To(BeEmpty(), "no partial report")
	})
})
