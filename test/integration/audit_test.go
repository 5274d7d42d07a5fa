package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/endpoint-policy/endpoint-policy/internal/audit"
	"github.com/endpoint-policy/endpoint-policy/internal/cluster"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/metrics"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/server"
)

// withoutWebhooks runs fn while the webhook configurations are not
// registered, as while endpoint-policy is not installed (or down, with
// mutation failing open), and registers them again afterwards.
func withoutWebhooks(ctx context.Context, fn func()) {
	GinkgoHelper()
	wio := testEnv.WebhookInstallOptions
	var mutating []*admissionregistrationv1.MutatingWebhookConfiguration
	var validating []*admissionregistrationv1.ValidatingWebhookConfiguration
	for _, m := range wio.MutatingWebhooks {
		c := &admissionregistrationv1.MutatingWebhookConfiguration{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(m), c)).To(Succeed())
		Expect(k8s.Delete(ctx, c)).To(Succeed())
		mutating = append(mutating, c)
	}
	for _, v := range wio.ValidatingWebhooks {
		c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(v), c)).To(Succeed())
		Expect(k8s.Delete(ctx, c)).To(Succeed())
		validating = append(validating, c)
	}
	probe := pod("default", true, nil)
	mutated := func() bool {
		p := probe.DeepCopy()
		Expect(k8s.Create(ctx, p, client.DryRunAll)).To(Succeed())
		return len(p.Spec.Containers[0].Env) > 0
	}
	// Registered again however fn ends: a failure in fn must not leave
	// the rest of the suite without webhooks.
	defer func() {
		By("registering the webhooks again")
		for _, c := range mutating {
			c.ObjectMeta = metav1.ObjectMeta{Name: c.Name, Labels: c.Labels, Annotations: c.Annotations}
			Expect(k8s.Create(ctx, c)).To(Succeed())
		}
		for _, c := range validating {
			c.ObjectMeta = metav1.ObjectMeta{Name: c.Name, Labels: c.Labels, Annotations: c.Annotations}
			Expect(k8s.Create(ctx, c)).To(Succeed())
		}
		Eventually(mutated).WithTimeout(settle).WithPolling(polling).Should(BeTrue())
		By("waiting until the API server calls the validating webhooks again")
		Eventually(func() float64 {
			before := webhookRequests("/validate-kubeadm-config")
			// A kubeadm-config of the spec may exist: the webhook is called
			// before the API server finds that out.
			err := k8s.Create(ctx, kubeadmConfigMap("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"), client.DryRunAll)
			Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
			return webhookRequests("/validate-kubeadm-config") - before
		}).WithTimeout(settle).WithPolling(polling).Should(BeNumerically(">", 0))
	}()
	By("waiting until the API server no longer calls the webhooks")
	Eventually(mutated).WithTimeout(settle).WithPolling(polling).Should(BeFalse())

	fn()
}

func violations(id policy.ID, namespace, kind string) func() float64 {
	return func() float64 {
		return counter("endpoint_policy_violations", map[string]string{"policy": string(id), "namespace": namespace, "kind": kind})
	}
}

// policyReport polls the namespace's report: an OpenReports Report, the one
// API audit.reportAPI Auto writes where, as here, both CRDs are installed.
func policyReport(ctx context.Context, namespace string) func() (*unstructured.Unstructured, error) {
	return report(ctx, audit.ReportGVK, namespace)
}

// report polls the namespace's report of kind gvk.
func report(ctx context.Context, gvk schema.GroupVersionKind, namespace string) func() (*unstructured.Unstructured, error) {
	return func() (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		err := k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: audit.ReportName}, u)
		return u, err
	}
}

// reportResult is a PolicyReport result, reduced to what the specs check.
type reportResult struct {
	Policy, Result, Action, Kind, Namespace, Name string
}

func resultsOf(u *unstructured.Unstructured) []reportResult {
	raw, _, _ := unstructured.NestedSlice(u.Object, "results")
	var out []reportResult
	for _, r := range raw {
		m := r.(map[string]any)
		res := reportResult{Policy: m["policy"].(string), Result: m["result"].(string)}
		res.Action, _, _ = unstructured.NestedString(m, "properties", "action")
		if resources, ok := m["resources"].([]any); ok && len(resources) == 1 {
			ref := resources[0].(map[string]any)
			res.Kind, res.Namespace, res.Name = ref["kind"].(string), ref["namespace"].(string), ref["name"].(string)
		}
		out = append(out, res)
	}
	return out
}

func summaryOf(u *unstructured.Unstructured, key string) int64 {
	n, _, _ := unstructured.NestedInt64(u.Object, "summary", key)
	return n
}

// auditEvents polls the audit's Events regarding the object with uid.
func auditEvents(ctx context.Context, namespace string, uid types.UID) func() ([]eventsv1.Event, error) {
	return func() ([]eventsv1.Event, error) {
		list := &eventsv1.EventList{}
		if err := k8s.List(ctx, list, client.InNamespace(namespace)); err != nil {
			return nil, err
		}
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.Regarding.UID == uid && e.Action == audit.EventAction && e.Reason == policy.EventReason {
				out = append(out, e)
			}
		}
		return out, nil
	}
}

// announcedOnce matches the Events of a violation announced once: one Event,
// never repeated (a repeat by the same recorder makes it a series).
var announcedOnce = SatisfyAll(HaveLen(1), HaveEach(HaveField("Series", BeNil())))

// startSecondAudit runs another audit, as a new leader (or the restarted
// server) would, on its own manager, and returns it.
func startSecondAudit(ctx context.Context) *audit.Audit {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(serverConfig, ctrl.Options{
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cluster.CacheOptions(),
		Controller: crconfig.Controller{SkipNameValidation: ptr.To(true)}, // a second "audit" controller
	})
	Expect(err).NotTo(HaveOccurred())
	view, err := cluster.NewView(ctx, mgr.GetCache(), cluster.NewLeaseInformer(fake.NewClientset(), serverNamespace), logf.Log)
	Expect(err).NotTo(HaveOccurred())
	rec, err := metrics.NewRecorder(prometheus.NewRegistry())
	Expect(err).NotTo(HaveOccurred())
	// The suite's configuration, as the server runs it.
	cfg, err := config.Parse([]byte(configYAML(nil)))
	Expect(err).NotTo(HaveOccurred())
	engine, err := cfg.Engine()
	Expect(err).NotTo(HaveOccurred())
	a, err := audit.New(ctx, mgr, audit.Options{
		Engine: policy.NewStore(engine), Cluster: view, Namespaces: mgr.GetCache(),
		Events: mgr.GetEventRecorder(server.EventSource), ReportingController: server.EventSource,
		Metrics: rec, Settings: config.Default().Audit,
	})
	Expect(err).NotTo(HaveOccurred())
	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	DeferCleanup(func() {
		cancel()
		Eventually(done).WithTimeout(settle).Should(Receive(BeNil()))
	})
	return a
}

var _ = Describe("background audit", func() {
	It("reports what was admitted while the webhook was not registered, in the gauge, once in Events and in a PolicyReport; fixing it clears them", func(ctx context.Context) {
		// A short interval, so that the spec sees several audit rounds.
		useConfig(func(c *config.PolicyConfiguration) { c.Audit.Interval = metav1.Duration{Duration: time.Second} })
		ns := newNamespace(ctx, nil)
		unrewritten := pod(ns, true, nil)
		kubeVIP := kubeVIPDaemonSet(ns, "v0.8.4")
		// Its template pins the API server's address (the k0s #5740
		// shape): a warning, its pods are rewritten at admission.
		kubeVIP.Spec.Template.Spec.Containers[0].Env = append(kubeVIP.Spec.Template.Spec.Containers[0].Env,
			envVars(envHost, "10.0.0.11", envPort, "6443")...)
		withoutWebhooks(ctx, func() {
			Expect(k8s.Create(ctx, unrewritten)).To(Succeed())
			Expect(unrewritten.Spec.Containers[0].Env).To(BeEmpty(), "not rewritten: no webhook")
			Expect(k8s.Create(ctx, kubeVIP)).To(Succeed())
		})

		By("the gauge counts each violation")
		Eventually(violations("host-network-endpoint", ns, "Pod")).WithTimeout(settle).Should(Equal(1.0))
		Eventually(violations("kube-vip-ipvs-backends", ns, "DaemonSet")).WithTimeout(settle).Should(Equal(1.0))

		By("the namespace's OpenReports Report lists them, and no PolicyReport repeats them: both CRDs, as upstream publishes them, are installed, and Auto writes one API")
		for _, gvk := range []schema.GroupVersionKind{audit.ReportGVK} {
			Eventually(func(g Gomega) {
				r, err := report(ctx, gvk, ns)()
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(resultsOf(r)).To(ConsistOf(
					reportResult{"host-network-endpoint", "fail", "mutate", "Pod", ns, unrewritten.Name},
					// The DaemonSet's template pins the address: a warning.
					reportResult{"host-network-endpoint", "warn", "mutate", "DaemonSet", ns, kubeVIP.Name},
					reportResult{"kube-vip-ipvs-backends", "fail", "deny", "DaemonSet", ns, kubeVIP.Name},
				))
				g.Expect(summaryOf(r, "fail")).To(Equal(int64(2)))
				g.Expect(summaryOf(r, "warn")).To(Equal(int64(1)))
				g.Expect(r.GetLabels()).To(HaveKeyWithValue(audit.ManagedByLabel, "endpoint-policy"))
			}).WithTimeout(settle).WithPolling(polling).Should(Succeed(), gvk.String())
		}
		Consistently(func() error { _, err := report(ctx, audit.PolicyReportGVK, ns)(); return err }).WithTimeout(2*time.Second).
			Should(Satisfy(apierrors.IsNotFound), "Auto writes no PolicyReport where OpenReports is served")
		By("the official CRD keeps what the audit writes: severity, category, rule")
		for _, gvk := range []schema.GroupVersionKind{audit.ReportGVK} {
			r, err := report(ctx, gvk, ns)()
			Expect(err).NotTo(HaveOccurred())
			results, _, _ := unstructured.NestedSlice(r.Object, "results")
			Expect(results).To(ContainElement(SatisfyAll(
				HaveKeyWithValue("policy", "kube-vip-ipvs-backends"), HaveKeyWithValue("severity", "high"),
				HaveKeyWithValue("category", "Control plane"), HaveKeyWithValue("rule", "kube-vip #875"))), gvk.String())
			Expect(results).To(HaveEach(HaveKey("timestamp")))
		}
		r, err := report(ctx, audit.ReportGVK, ns)()
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Object).To(HaveKeyWithValue("source", "endpoint-policy"))
		Expect(r.Object).To(HaveKeyWithValue("configuration", HaveKeyWithValue("limits", SatisfyAll(
			HaveKeyWithValue("maxResults", BeNumerically("==", 100)),
			HaveKeyWithValue("statusFilter", ConsistOf("fail", "warn", "skip"))))))

		By("nothing changes, so no audit round rewrites the reports")
		versions := func() ([]string, error) {
			var out []string
			for _, gvk := range []schema.GroupVersionKind{audit.ReportGVK} {
				r, err := report(ctx, gvk, ns)()
				if err != nil {
					return nil, err
				}
				out = append(out, r.GetResourceVersion())
			}
			return out, nil
		}
		before, err := versions()
		Expect(err).NotTo(HaveOccurred())
		Consistently(versions).WithTimeout(3 * time.Second).WithPolling(polling).Should(Equal(before))

		By("one Event per violation, not one per audit round")
		Eventually(auditEvents(ctx, ns, unrewritten.UID)).WithTimeout(settle).Should(HaveLen(1))
		Eventually(auditEvents(ctx, ns, kubeVIP.UID)).WithTimeout(settle).Should(HaveLen(2))
		Expect(auditEvents(ctx, ns, unrewritten.UID)()).To(ContainElement(
			HaveField("Note", ContainSubstring("[host-network-endpoint] would set KUBERNETES_SERVICE_HOST=localhost"))))
		// A repeat from the same recorder would show as a series (count 2);
		// so would the DaemonSet's second violation, were its Event not
		// related to the field it is about.
		Consistently(auditEvents(ctx, ns, kubeVIP.UID)).WithTimeout(3500 * time.Millisecond).Should(SatisfyAll(
			HaveLen(2), HaveEach(HaveField("Series", BeNil())),
			ContainElement(HaveField("Note", HavePrefix("[host-network-endpoint] pods created from this template will be rewritten"))),
			ContainElement(HaveField("Note", ContainSubstring("kube-vip #875"))),
		))

		By("fixing the objects clears the gauge and the report")
		Eventually(func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(kubeVIP), kubeVIP); err != nil {
				return err
			}
			kubeVIP.Spec.Template.Spec.Containers[0].Image = "ghcr.io/kube-vip/kube-vip:v0.8.10"
			kubeVIP.Spec.Template.Spec.Containers[0].Env = append(kubeVIP.Spec.Template.Spec.Containers[0].Env,
				envVars(envHost, "localhost", envPort, "7443")...)
			return k8s.Update(ctx, kubeVIP)
		}).WithTimeout(settle).Should(Succeed())
		// A pod's env cannot change: it is replaced (and rewritten now).
		Expect(k8s.Delete(ctx, unrewritten, client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(violations("host-network-endpoint", ns, "Pod")).WithTimeout(settle).Should(BeZero())
		Eventually(violations("kube-vip-ipvs-backends", ns, "DaemonSet")).WithTimeout(settle).Should(BeZero())
		Eventually(violations("host-network-endpoint", ns, "DaemonSet")).WithTimeout(settle).Should(BeZero())
		for _, gvk := range []schema.GroupVersionKind{audit.PolicyReportGVK, audit.ReportGVK} {
			Eventually(func() error { _, err := report(ctx, gvk, ns)(); return err }).WithTimeout(settle).
				Should(Satisfy(apierrors.IsNotFound), "a clean namespace has no report: %s", gvk)
		}
	})

	It("writes the report API audit.reportAPI selects, and deletes its reports of the other", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		unrewritten := pod(ns, true, nil)
		withoutWebhooks(ctx, func() { Expect(k8s.Create(ctx, unrewritten)).To(Succeed()) })
		exists := func(gvk schema.GroupVersionKind) func() error {
			return func() error { _, err := report(ctx, gvk, ns)(); return err }
		}
		By("Auto: both APIs are served; one is written, OpenReports, with the one pod as its scope")
		Eventually(exists(audit.ReportGVK)).WithTimeout(settle).Should(Succeed())
		Consistently(exists(audit.PolicyReportGVK)).WithTimeout(2 * time.Second).Should(Satisfy(apierrors.IsNotFound))
		r, err := report(ctx, audit.ReportGVK, ns)()
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Object).To(HaveKeyWithValue("scope", SatisfyAll(HaveKeyWithValue("kind", "Pod"), HaveKeyWithValue("name", unrewritten.Name))))

		By("wgpolicyk8s.io: the Report goes, the PolicyReport comes")
		useConfig(func(c *config.PolicyConfiguration) { c.Audit.ReportAPI = config.ReportAPIWGPolicy })
		Eventually(exists(audit.ReportGVK)).WithTimeout(settle).Should(Satisfy(apierrors.IsNotFound))
		Eventually(exists(audit.PolicyReportGVK)).WithTimeout(settle).Should(Succeed())

		By("openreports.io: the other way round")
		useConfig(func(c *config.PolicyConfiguration) { c.Audit.ReportAPI = config.ReportAPIOpenReports })
		Eventually(exists(audit.PolicyReportGVK)).WithTimeout(settle).Should(Satisfy(apierrors.IsNotFound))
		Eventually(exists(audit.ReportGVK)).WithTimeout(settle).Should(Succeed())
	})

	It("does not announce a violation again after a restart or a change of leader", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		kubeVIP := kubeVIPDaemonSet(ns, "v0.8.4")
		kubeVIP.Spec.Template.Spec.HostNetwork = false // one violation: kube-vip's
		withoutWebhooks(ctx, func() { Expect(k8s.Create(ctx, kubeVIP)).To(Succeed()) })
		Eventually(auditEvents(ctx, ns, kubeVIP.UID)).WithTimeout(settle).Should(HaveLen(1))

		firstSeen := func(gvk schema.GroupVersionKind) func() (int64, error) {
			return func() (int64, error) {
				r, err := report(ctx, gvk, ns)()
				if err != nil {
					return 0, err
				}
				results, _, _ := unstructured.NestedSlice(r.Object, "results")
				if len(results) != 1 {
					return 0, fmt.Errorf("%d results", len(results))
				}
				seconds, _, _ := unstructured.NestedInt64(results[0].(map[string]any), "timestamp", "seconds")
				return seconds, nil
			}
		}
		seen := map[schema.GroupVersionKind]int64{}
		for _, gvk := range []schema.GroupVersionKind{audit.ReportGVK} {
			Eventually(firstSeen(gvk)).WithTimeout(settle).Should(BeNumerically(">", 0))
			seen[gvk], _ = firstSeen(gvk)()
		}
		// The second audit's own first sight must fall in a later second.
		Eventually(func() int64 { return time.Now().Unix() }).WithTimeout(settle).Should(BeNumerically(">", seen[audit.ReportGVK]+1))

		By("a second audit, with its own recorder, audits everything from scratch")
		second := startSecondAudit(ctx)
		Eventually(second.Synced()).WithTimeout(settle).Should(BeClosed())
		Consistently(auditEvents(ctx, ns, kubeVIP.UID)).WithTimeout(2 * time.Second).Should(announcedOnce)
		By("its reports keep the time the violation was first seen, from the reports it found")
		Consistently(func() (map[schema.GroupVersionKind]int64, error) {
			now := map[schema.GroupVersionKind]int64{}
			for gvk := range seen {
				t, err := firstSeen(gvk)()
				if err != nil {
					return nil, err
				}
				now[gvk] = t
			}
			return now, nil
		}).WithTimeout(2 * time.Second).Should(Equal(seen))

		By("a new violation is still announced by it")
		kubeVIP2 := kubeVIPDaemonSet(ns, "v0.8.5")
		kubeVIP2.Spec.Template.Spec.HostNetwork = false
		withoutWebhooks(ctx, func() { Expect(k8s.Create(ctx, kubeVIP2)).To(Succeed()) })
		// Both audits run: each announces it once.
		Eventually(auditEvents(ctx, ns, kubeVIP2.UID)).WithTimeout(settle).Should(HaveLen(2))
	})

	It("announces a workload's pods once per workload and policy per interval, not once per pod", func(ctx context.Context) {
		useConfig(func(c *config.PolicyConfiguration) { c.Audit.Interval = metav1.Duration{Duration: 2 * time.Second} })
		ns := newNamespace(ctx, nil)
		ds := kubeVIPDaemonSet(ns, "v0.8.10")
		ds.Spec.Template.Spec.Containers[0].Env = nil
		ds.Spec.Template.Spec.HostNetwork = false // no violation of its own; its pods are made by hand
		Expect(k8s.Create(ctx, ds)).To(Succeed())
		owned := func() *corev1.Pod {
			p := pod(ns, true, nil)
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID,
				Controller: ptr.To(true)}}
			return p
		}
		var pods []*corev1.Pod
		withoutWebhooks(ctx, func() {
			for range 3 {
				p := owned()
				Expect(k8s.Create(ctx, p)).To(Succeed())
				pods = append(pods, p)
			}
		})
		Eventually(violations("host-network-endpoint", ns, "Pod")).WithTimeout(settle).Should(Equal(3.0))
		Eventually(auditEvents(ctx, ns, ds.UID)).WithTimeout(settle).Should(ConsistOf(HaveField("Note", HavePrefix(
			fmt.Sprintf("DaemonSet %s/%s: 3 pods newly in violation of host-network-endpoint, e.g. pod ", ns, ds.Name)))))
		Consistently(auditEvents(ctx, ns, ds.UID)).WithTimeout(3 * time.Second).Should(announcedOnce)
		for _, p := range pods {
			Expect(auditEvents(ctx, ns, p.UID)()).To(BeEmpty(), "no Event per pod")
		}

		By("a pod found later is announced an interval after the workload's last Event")
		withoutWebhooks(ctx, func() { Expect(k8s.Create(ctx, owned())).To(Succeed()) })
		Eventually(auditEvents(ctx, ns, ds.UID)).WithTimeout(settle).Should(ContainElement(HaveField("Note",
			MatchRegexp(`^DaemonSet %s/%s, since [^:]+:[^:]+:[^:]+: 1 pod newly in violation of host-network-endpoint, `, ns, ds.Name))))
	})

	It("keeps the report bounded with 1,000 violating pods in one namespace: results capped, the last counting the rest, the summary what is listed", func(ctx context.Context) {
		const pods = 1000
		ns := newNamespace(ctx, nil)
		withoutWebhooks(ctx, func() {
			By(fmt.Sprintf("creating %d hostNetwork pods without the rewrite", pods))
			var wg sync.WaitGroup
			work := make(chan int)
			for range 8 {
				wg.Go(func() {
					defer GinkgoRecover()
					for range work {
						Expect(k8s.Create(ctx, pod(ns, true, nil))).To(Succeed())
					}
				})
			}
			for i := range pods {
				work <- i
			}
			close(work)
			wg.Wait()
		})
		Eventually(violations("host-network-endpoint", ns, "Pod")).WithTimeout(time.Minute).Should(Equal(float64(pods)))
		// capped checks the report with counted objects in its aggregate,
		// and returns each result's message and the aggregate's properties.
		capped := func(g Gomega, counted int) ([]string, map[string]any) {
			r, err := policyReport(ctx, ns)()
			g.Expect(err).NotTo(HaveOccurred())
			// What Policy Reporter counts from the results is the summary.
			g.Expect(resultsOf(r)).To(HaveLen(config.DefaultMaxReportResults))
			g.Expect(summaryOf(r, "fail")).To(Equal(int64(config.DefaultMaxReportResults)))
			g.Expect(summaryOf(r, "pass")).To(BeZero())
			results, _, _ := unstructured.NestedSlice(r.Object, "results")
			last := results[len(results)-1].(map[string]any)
			g.Expect(last).To(HaveKeyWithValue("properties", HaveKeyWithValue("objects", fmt.Sprint(counted))))
			g.Expect(last).To(HaveKeyWithValue("message", HavePrefix("objects in violation of host-network-endpoint not listed one by one")))
			g.Expect(last).NotTo(HaveKey("resources"), "the aggregate stands for them all")
			size, err := json.Marshal(r.Object)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(len(size)).To(BeNumerically("<", 256<<10), "a report stays far below etcd's 1.5 MiB object limit")
			var messages []string
			for _, res := range results {
				messages = append(messages, res.(map[string]any)["message"].(string))
			}
			return messages, last["properties"].(map[string]any)
		}
		var before []string
		var properties map[string]any
		Eventually(func(g Gomega) {
			before, properties = capped(g, pods-config.DefaultMaxReportResults+1)
		}).WithTimeout(time.Minute).WithPolling(polling).Should(Succeed())

		By("deleting one counted pod: every message stays byte-identical, the aggregate's count goes down")
		names := strings.Split(properties["objectNames"].(string), ", ")
		gone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: strings.TrimPrefix(names[0], "Pod/")}}
		Expect(k8s.Delete(ctx, gone, client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(func(g Gomega) {
			after, _ := capped(g, pods-config.DefaultMaxReportResults)
			g.Expect(after).To(Equal(before))
		}).WithTimeout(time.Minute).WithPolling(polling).Should(Succeed())
	})
})

var _ = Describe("audit mode in admission", func() {
	It("records an audit annotation per policy in the API server's audit log", func(ctx context.Context) {
		useConfig(func(c *config.PolicyConfiguration) { c.Mode = policy.Audit })
		ns := newNamespace(ctx, nil)
		ds := kubeVIPDaemonSet(ns, "v0.8.5")
		warnedDuringDryRun(ctx, ds, "[kube-vip-ipvs-backends]")
		Expect(k8s.Create(ctx, ds)).To(Succeed(), "admitted in Audit")

		// The API server prefixes the key with the webhook's name, which
		// ends in .endpoint-policy.io.
		const key = "validate-workloads.endpoint-policy.io/kube-vip-ipvs-backends"
		Eventually(func(g Gomega) {
			f, err := os.Open(auditLog)
			g.Expect(err).NotTo(HaveOccurred())
			defer f.Close()
			found := false
			lines := bufio.NewScanner(f)
			lines.Buffer(nil, 1<<20)
			for lines.Scan() {
				var ev struct {
					Verb      string `json:"verb"`
					ObjectRef struct {
						Resource, Namespace string
					} `json:"objectRef"`
					Annotations map[string]string `json:"annotations"`
				}
				g.Expect(json.Unmarshal(lines.Bytes(), &ev)).To(Succeed())
				// A create with generateName has no name in the audit event.
				if ev.Verb == "create" && ev.ObjectRef.Resource == "daemonsets" && ev.ObjectRef.Namespace == ns &&
					strings.HasPrefix(ev.Annotations[key], "[kube-vip-ipvs-backends] spec.template.spec.containers[0].image: kube-vip v0.8.5") {
					found = true
				}
			}
			g.Expect(found).To(BeTrue(), "no audit event of the create with annotation %s", key)
		}).WithTimeout(settle).WithPolling(polling).Should(Succeed())
	})
})
