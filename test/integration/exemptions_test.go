package integration

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/hostnetwork"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubevip"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

var _ = Describe("exemptions", func() {
	It("turn an Enforce denial into a warning with the reason and the audit's fail into a skip; at the expiry both come back without a restart or a reload", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		kubeVIP := kubeVIPDaemonSet(ns, "v0.8.4") // kube-vip #875: denied in Enforce
		kubeVIP.GenerateName, kubeVIP.Name = "", "kube-vip"
		// Long enough for the spec to see it in force, short enough to
		// see it expire. The audit's interval stays at its 5 minutes: only
		// the expiry can make it look again.
		expires := time.Now().Add(20 * time.Second).UTC().Truncate(time.Second)
		until := expires.Format(time.RFC3339)
		const reason, podReason = "upgrade to v0.8.10 in change CHG-4711", "kube-vip reads the API server at the VIP's node"
		useConfig(func(c *config.PolicyConfiguration) {
			c.Exemptions = []config.Exemption{
				{Name: "kube-vip-upgrade", Policies: []policy.ID{kubevip.ID}, Namespace: ns,
					Kinds: []string{"DaemonSet"}, Names: []string{kubeVIP.Name}, Reason: reason, Expires: until},
				// No name, no expiry: exemptions[1], for the DaemonSet's pods.
				{Policies: []policy.ID{hostnetwork.ID}, Namespace: ns, Kinds: []string{"DaemonSet"}, Names: []string{kubeVIP.Name}, Reason: podReason},
			}
		})
		exempted := "[kube-vip-ipvs-backends] exempted: " + reason + " (until " + until + ")"
		Expect(gaugeWith("endpoint_policy_exemption_expiry_timestamp_seconds",
			map[string]string{"exemption": "kube-vip-upgrade", "policy": string(kubevip.ID)})).To(Equal(float64(expires.Unix())))

		By("admission: created, with the exemption's warning instead of a denial")
		exemptDecisions := counter("endpoint_policy_admission_decisions_total", map[string]string{"policy": string(kubevip.ID), "action": "exempt"})
		got := clientWarnings.During(func() { Expect(k8s.Create(ctx, kubeVIP)).To(Succeed()) })
		Expect(got).To(ContainElement(exempted))
		Expect(counter("endpoint_policy_admission_decisions_total", map[string]string{"policy": string(kubevip.ID), "action": "exempt"})).
			To(BeNumerically(">", exemptDecisions))

		By("a pod the DaemonSet creates is exempted through its controller: not rewritten, the reason in the warning")
		pinned := envVars(envHost, "10.0.1.16", envPort, "6443")
		dsPod := pod(ns, true, pinned)
		dsPod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: kubeVIP.Name, UID: kubeVIP.UID, Controller: ptr.To(true)}}
		got = clientWarnings.During(func() { Expect(k8s.Create(ctx, dsPod)).To(Succeed()) })
		Expect(dsPod.Spec.Containers[0].Env).To(Equal(pinned), "exempted: not rewritten")
		Expect(got).To(ContainElement("[host-network-endpoint] exempted: " + podReason))

		By("the audit: a skip with the reason and the expiry, counted in the summary and the exemption's matches, not in the violation gauge")
		Eventually(func(g Gomega) {
			r, err := policyReport(ctx, ns)()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resultsOf(r)).To(ContainElement(reportResult{string(kubevip.ID), "skip", "exempt", "DaemonSet", ns, kubeVIP.Name}))
			g.Expect(resultFor(r, string(kubevip.ID))).To(SatisfyAll(
				HaveKeyWithValue("message", HavePrefix(exempted+"; ")),
				HaveKeyWithValue("properties", SatisfyAll(HaveKeyWithValue("exemption", "kube-vip-upgrade"), HaveKeyWithValue("expires", until)))))
			g.Expect(summaryOf(r, "skip")).To(BeNumerically(">=", 1))
		}).WithTimeout(settle).WithPolling(polling).Should(Succeed())
		Expect(violations(kubevip.ID, ns, "DaemonSet")()).To(BeZero())
		Expect(gaugeWith("endpoint_policy_exemption_matches", map[string]string{"exemption": "kube-vip-upgrade"})).To(Equal(1.0))
		Expect(time.Now()).To(BeTemporally("<", expires), "the spec saw the exemption in force before it expired")

		By("at the expiry, with the same configuration: admission denies, the audit reports fail and says the exemption expired")
		Eventually(func() error {
			update := kubeVIP.DeepCopy()
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(kubeVIP), update)).To(Succeed())
			update.Spec.Template.Spec.Containers[0].Image = "ghcr.io/kube-vip/kube-vip:v0.8.5"
			return k8s.Update(ctx, update, client.DryRunAll)
		}).WithTimeout(time.Until(expires) + settle).WithPolling(polling).Should(Satisfy(apierrors.IsForbidden))
		Eventually(func(g Gomega) {
			r, err := policyReport(ctx, ns)()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resultsOf(r)).To(ContainElement(reportResult{string(kubevip.ID), "fail", "deny", "DaemonSet", ns, kubeVIP.Name}))
		}).WithTimeout(settle).WithPolling(polling).Should(Succeed())
		Eventually(violations(kubevip.ID, ns, "DaemonSet")).WithTimeout(settle).Should(Equal(1.0))
		Eventually(func(g Gomega) {
			list := &eventsv1.EventList{}
			g.Expect(k8s.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(ContainElement(SatisfyAll(
				HaveField("Regarding.UID", kubeVIP.UID), HaveField("Type", "Warning"), HaveField("Reason", audit.ReasonExemptionExpired),
				HaveField("Note", ContainSubstring("exemption kube-vip-upgrade expired at "+until)))))
		}).WithTimeout(settle).WithPolling(polling).Should(Succeed())
		Expect(gaugeWith("endpoint_policy_exemption_matches", map[string]string{"exemption": "kube-vip-upgrade"})).To(BeZero())
	})
})

// gaugeWith is the value of the server's series name with labels; it fails
// when there is none.
func gaugeWith(name string, labels map[string]string) float64 {
	GinkgoHelper()
	values, err := metricstest.Values(crmetrics.Registry, name, labels)
	Expect(err).NotTo(HaveOccurred())
	Expect(values).To(HaveLen(1), "%s%v", name, labels)
	return values[0]
}

// resultFor returns the first result of policy id in the report u.
func resultFor(u *unstructured.Unstructured, id string) map[string]any {
	raw, _, _ := unstructured.NestedSlice(u.Object, "results")
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok && m["policy"] == id {
			return m
		}
	}
	return nil
}
