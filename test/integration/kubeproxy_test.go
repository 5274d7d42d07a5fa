package integration

import (
	"context"
	"fmt"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/controller"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/metricstest"
)

const testFinalizer = "test.endpoint-policy.io/hold"

// newWorker creates a Node (held by a finalizer, so that a deletion leaves it
// with a deletionTimestamp) and removes it afterwards.
func newWorker(ctx context.Context) *corev1.Node {
	GinkgoHelper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{GenerateName: "worker-", Finalizers: []string{testFinalizer}}}
	Expect(k8s.Create(ctx, n)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		Expect(client.IgnoreNotFound(k8s.Patch(ctx, n, client.RawPatch("application/merge-patch+json",
			[]byte(`{"metadata":{"finalizers":null}}`))))).To(Succeed())
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, n))).To(Succeed())
	})
	return n
}

// taint puts cluster-autoscaler's taint (or another key) on node, with the
// Unix time as its value as cluster-autoscaler writes it.
func taint(ctx context.Context, node *corev1.Node, key string, at time.Time) {
	GinkgoHelper()
	patch := client.MergeFrom(node.DeepCopy())
	node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: key, Value: strconv.FormatInt(at.Unix(), 10), Effect: corev1.TaintEffectNoSchedule})
	Expect(k8s.Patch(ctx, node, patch)).To(Succeed())
}

func untaint(ctx context.Context, node *corev1.Node) {
	GinkgoHelper()
	patch := client.MergeFrom(node.DeepCopy())
	node.Spec.Taints = nil
	Expect(k8s.Patch(ctx, node, patch)).To(Succeed())
}

// kubeProxyPod is a pod of kubeadm's kube-proxy DaemonSet, bound to nodeName
// ("" for a pod the scheduler has not bound yet).
func kubeProxyPod(namespace, nodeName string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kube-proxy-", Namespace: namespace, Labels: map[string]string{"k8s-app": "kube-proxy"}},
		Spec: corev1.PodSpec{
			NodeName:    nodeName,
			HostNetwork: true,
			Containers: []corev1.Container{{
				Name:    "kube-proxy",
				Image:   "registry.k8s.io/kube-proxy:v1.37.2",
				Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"},
			}},
		},
	}
}

// kubeProxyDaemonSet is kubeadm's kube-proxy DaemonSet with a readiness
// probe on path.
func kubeProxyDaemonSet(namespace, path string) *appsv1.DaemonSet {
	p := kubeProxyPod(namespace, "")
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: path, Port: intstr.FromInt32(10256)}}}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kube-proxy-", Namespace: namespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: p.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels}, Spec: p.Spec},
		},
	}
}

func create(ctx context.Context, p *corev1.Pod) *corev1.Pod {
	GinkgoHelper()
	Expect(k8s.Create(ctx, p)).To(Succeed())
	return p
}

// annotationsOf polls a pod's annotations.
func annotationsOf(ctx context.Context, p *corev1.Pod) func() (map[string]string, error) {
	return func() (map[string]string, error) {
		got := &corev1.Pod{}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(p), got)
		return got.Annotations, err
	}
}

func nodeDeleting(reason string, since time.Time) types.GomegaMatcher {
	return SatisfyAll(
		HaveKeyWithValue(kubeproxy.NodeDeletingAnnotation, reason),
		HaveKeyWithValue(kubeproxy.NodeDeletingSinceAnnotation, since.UTC().Format(time.RFC3339)),
	)
}

var notNodeDeleting = SatisfyAll(Not(HaveKey(kubeproxy.NodeDeletingAnnotation)), Not(HaveKey(kubeproxy.NodeDeletingSinceAnnotation)))

// eventsFor polls the events.k8s.io Events regarding p.
func eventsFor(ctx context.Context, p *corev1.Pod) func() ([]eventsv1.Event, error) {
	return func() ([]eventsv1.Event, error) {
		list := &eventsv1.EventList{}
		if err := k8s.List(ctx, list, client.InNamespace(p.Namespace)); err != nil {
			return nil, err
		}
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.Regarding.UID == p.UID {
				out = append(out, e)
			}
		}
		return out, nil
	}
}

func event(reason, action, note string) types.GomegaMatcher {
	return ContainElement(SatisfyAll(
		HaveField("Reason", reason),
		HaveField("Action", action),
		HaveField("Type", corev1.EventTypeNormal),
		HaveField("Related.Kind", "Node"),
		HaveField("Note", ContainSubstring(note)),
	))
}

func nodeDeletingChanges(action string) float64 {
	return counter("endpoint_policy_kube_proxy_node_deleting_annotations_total", map[string]string{"action": action})
}

var _ = Describe("kube-proxy-node-deleting", func() {
	var ns string
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
	})

	It("annotates the kube-proxy pods of a node tainted ToBeDeletedByClusterAutoscaler, and only them, until the taint goes away", func(ctx context.Context) {
		going, staying := newWorker(ctx), newWorker(ctx)
		onGoing := create(ctx, kubeProxyPod(ns, going.Name))
		onStaying := create(ctx, kubeProxyPod(ns, staying.Name))
		other := pod(ns, true, nil)
		other.Spec.NodeName = going.Name
		create(ctx, other)
		static := kubeProxyPod(ns, going.Name)
		static.Labels = map[string]string{"component": "kube-proxy"}
		create(ctx, static)
		added, removed := nodeDeletingChanges("add"), nodeDeletingChanges("remove")

		at := time.Now().Add(-time.Minute).Truncate(time.Second)
		taint(ctx, going, kubeproxy.ToBeDeletedTaint, at)
		Eventually(annotationsOf(ctx, onGoing)).WithTimeout(settle).WithPolling(polling).
			Should(nodeDeleting(kubeproxy.ReasonToBeDeleted, at))
		Eventually(annotationsOf(ctx, static)).WithTimeout(settle).WithPolling(polling).
			Should(nodeDeleting(kubeproxy.ReasonToBeDeleted, at), "kube-proxy pods selected by component=kube-proxy too")
		Eventually(eventsFor(ctx, onGoing)).WithTimeout(settle).WithPolling(polling).
			Should(event(controller.ReasonNodeDeleting, "Annotate", fmt.Sprintf("node %q is being deleted", going.Name)))
		Expect(nodeDeletingChanges("add")).To(BeNumerically(">=", added+2))
		const annotatedPods = "endpoint_policy_kube_proxy_node_deleting_pods"
		Eventually(gauge).WithArguments(annotatedPods).WithTimeout(settle).WithPolling(polling).Should(BeNumerically(">=", 2))
		peak := gauge(annotatedPods)
		// The per-pod signal alerts use to not page for an expected unready
		// kube-proxy.
		perPod := map[string]string{"namespace": ns, "pod": onGoing.Name, "node": going.Name, "reason": kubeproxy.ReasonToBeDeleted}
		Eventually(series).WithArguments(nodeDeletingSeries, perPod).WithTimeout(settle).WithPolling(polling).Should(Equal([]float64{1}))
		Expect(series(nodeDeletingSeries, map[string]string{"namespace": ns, "pod": onStaying.Name})).To(BeEmpty(),
			"no series for a pod whose node stays")

		By("leaving the pods on other nodes, and the other pods on this node, alone")
		Expect(annotationsOf(ctx, onStaying)()).To(notNodeDeleting)
		Expect(annotationsOf(ctx, other)()).To(notNodeDeleting)

		By("removing the annotations when the scale-down is cancelled")
		untaint(ctx, going)
		Eventually(annotationsOf(ctx, onGoing)).WithTimeout(settle).WithPolling(polling).Should(notNodeDeleting)
		Eventually(annotationsOf(ctx, static)).WithTimeout(settle).WithPolling(polling).Should(notNodeDeleting)
		Eventually(eventsFor(ctx, onGoing)).WithTimeout(settle).WithPolling(polling).
			Should(event(controller.ReasonNodeDeletingCancelled, "RemoveAnnotations", "no longer being deleted"))
		Expect(nodeDeletingChanges("remove")).To(BeNumerically(">=", removed+2))
		Eventually(gauge).WithArguments(annotatedPods).WithTimeout(settle).WithPolling(polling).Should(BeNumerically("<=", peak-2))
		Eventually(series).WithArguments(nodeDeletingSeries, perPod).WithTimeout(settle).WithPolling(polling).Should(BeEmpty(),
			"the series goes with the annotation")
	})

	It("annotates a DaemonSet pod that the scheduler binds to a tainted node", func(ctx context.Context) {
		going := newWorker(ctx)
		at := time.Now().Truncate(time.Second)
		taint(ctx, going, kubeproxy.ToBeDeletedTaint, at)
		p := create(ctx, kubeProxyPod(ns, ""))
		Expect(p.Annotations).To(notNodeDeleting, "not bound: nothing to say yet")

		Expect(k8s.SubResource("binding").Create(ctx, p, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns},
			Target:     corev1.ObjectReference{Kind: "Node", Name: going.Name},
		})).To(Succeed())
		Eventually(annotationsOf(ctx, p)).WithTimeout(settle).WithPolling(polling).
			Should(nodeDeleting(kubeproxy.ReasonToBeDeleted, at))
	})

	It("annotates the kube-proxy pods of a node whose deletion waits on a finalizer", func(ctx context.Context) {
		going := newWorker(ctx)
		p := create(ctx, kubeProxyPod(ns, going.Name))
		Expect(k8s.Delete(ctx, going)).To(Succeed())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(going), going)).To(Succeed())
		Expect(going.DeletionTimestamp).NotTo(BeNil())
		Eventually(annotationsOf(ctx, p)).WithTimeout(settle).WithPolling(polling).
			Should(nodeDeleting(kubeproxy.ReasonNodeDeletion, going.DeletionTimestamp.Time))
	})

	It("does not count cluster-autoscaler's soft taint DeletionCandidateOfClusterAutoscaler", func(ctx context.Context) {
		candidate, going := newWorker(ctx), newWorker(ctx)
		onCandidate := create(ctx, kubeProxyPod(ns, candidate.Name))
		onGoing := create(ctx, kubeProxyPod(ns, going.Name))
		taint(ctx, candidate, kubeproxy.DeletionCandidateTaint, time.Now())
		// The controller handles a node tainted after the candidate: once
		// its pod is annotated, the candidate's has had its chance.
		taint(ctx, going, kubeproxy.ToBeDeletedTaint, time.Now())
		Eventually(annotationsOf(ctx, onGoing)).WithTimeout(settle).WithPolling(polling).Should(HaveKey(kubeproxy.NodeDeletingAnnotation))
		Consistently(annotationsOf(ctx, onCandidate)).WithTimeout(2 * time.Second).WithPolling(polling).Should(notNodeDeleting)
	})

	It("leaves kube-proxy pods in namespaces labelled endpoint-policy.io/exclude=true alone", func(ctx context.Context) {
		going := newWorker(ctx)
		excluded := create(ctx, kubeProxyPod(newNamespace(ctx, map[string]string{policy.ExcludeLabel: "true"}), going.Name))
		included := create(ctx, kubeProxyPod(ns, going.Name))
		taint(ctx, going, kubeproxy.ToBeDeletedTaint, time.Now())
		// One reconcile of the node handles both pods.
		Eventually(annotationsOf(ctx, included)).WithTimeout(settle).WithPolling(polling).Should(HaveKey(kubeproxy.NodeDeletingAnnotation))
		Expect(annotationsOf(ctx, excluded)()).To(notNodeDeleting)
	})

	It("annotates at admission a pod created bound to a node being deleted, mirror pods included", func(ctx context.Context) {
		going := newWorker(ctx)
		at := time.Now().Truncate(time.Second)
		taint(ctx, going, kubeproxy.ToBeDeletedTaint, at)
		// The server's node cache sees the taint asynchronously.
		Eventually(func() (map[string]string, error) {
			p := kubeProxyPod(ns, going.Name)
			err := k8s.Create(ctx, p, client.DryRunAll)
			return p.Annotations, err
		}).WithTimeout(settle).WithPolling(polling).Should(HaveKey(kubeproxy.NodeDeletingAnnotation))

		By("the object the API server returns from the create carries the annotations")
		p := create(ctx, kubeProxyPod(ns, going.Name))
		Expect(p.Annotations).To(nodeDeleting(kubeproxy.ReasonToBeDeleted, at))

		static := kubeProxyPod(ns, going.Name)
		static.Labels = map[string]string{"component": "kube-proxy"}
		asMirrorPod(static)
		create(ctx, static)
		Expect(static.Annotations).To(SatisfyAll(nodeDeleting(kubeproxy.ReasonToBeDeleted, at), HaveKey(policy.MirrorPodAnnotation)))
	})

	It("in Audit mode annotates nothing, and says with an Event and a metric what it would have annotated", func(ctx context.Context) {
		useConfig(func(c *config.PolicyConfiguration) { c.Policies[kubeproxy.NodeDeletingID].Mode = policy.Audit })
		going := newWorker(ctx)
		taint(ctx, going, kubeproxy.ToBeDeletedTaint, time.Now())
		warnedDuringDryRun(ctx, kubeProxyPod(ns, going.Name), "[kube-proxy-node-deleting] would annotate")
		warned := nodeDeletingChanges("warn")

		p := create(ctx, kubeProxyPod(ns, ""))
		Expect(k8s.SubResource("binding").Create(ctx, p, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns},
			Target:     corev1.ObjectReference{Kind: "Node", Name: going.Name},
		})).To(Succeed())
		Eventually(eventsFor(ctx, p)).WithTimeout(settle).WithPolling(polling).
			Should(event(controller.ReasonNodeDeleting, "Audit", "[kube-proxy-node-deleting] would annotate"))
		Expect(nodeDeletingChanges("warn")).To(BeNumerically(">", warned))
		Expect(annotationsOf(ctx, p)()).To(notNodeDeleting)

		By("switched to Enforce, the controller annotates the pods of nodes already being deleted")
		writeConfig(configYAML(nil))
		Eventually(annotationsOf(ctx, p)).WithTimeout(settle).WithPolling(polling).Should(HaveKey(kubeproxy.NodeDeletingAnnotation))
	})
})

var _ = Describe("kube-proxy pod selectors", func() {
	It("refuse a reload that changes them, and keep the configuration in force", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		// The defaults are in force (an earlier spec's configuration is gone).
		warnedDuringDryRun(ctx, kubeProxyDaemonSet(ns, "/healthz"), "[kube-proxy-readiness-probe]")
		failed := reloadErrors()
		useConfig(func(c *config.PolicyConfiguration) {
			c.Policies[kubeproxy.NodeDeletingID].Settings.(*kubeproxy.Settings).PodSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"app": "kube-proxy"}}}
			c.Policies[kubeproxy.ReadinessProbeID].Mode = policy.Enforce
		})
		Eventually(reloadErrors).WithTimeout(settle).WithPolling(polling).Should(BeNumerically(">", failed))
		By("the readiness-probe policy stays in Audit, as in the configuration in force")
		warnedDuringDryRun(ctx, kubeProxyDaemonSet(ns, "/healthz"), "[kube-proxy-readiness-probe]")
	})
})

var _ = Describe("kube-proxy-readiness-probe", func() {
	var ns string
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
	})

	It("warns about a /healthz readiness probe by default, and denies it in Enforce", func(ctx context.Context) {
		const want = "[kube-proxy-readiness-probe] spec.template.spec.containers[0].readinessProbe.httpGet.path: the readinessProbe"
		warnedDuringDryRun(ctx, kubeProxyDaemonSet(ns, "/healthz"), want)

		useConfig(func(c *config.PolicyConfiguration) { c.Policies[kubeproxy.ReadinessProbeID].Mode = policy.Enforce })
		deniedDuringDryRun(ctx, kubeProxyDaemonSet(ns, "/healthz"), want)
		Expect(k8s.Create(ctx, kubeProxyDaemonSet(ns, "/livez"))).To(Succeed(), "/livez is the fix")
	})
})

const nodeDeletingSeries = "endpoint_policy_kube_proxy_node_deleting"

// series returns the values of the series of metric name whose labels
// include labels: none when it has no such series.
func series(name string, labels map[string]string) []float64 {
	values, err := metricstest.Values(crmetrics.Registry, name, labels)
	Expect(err).NotTo(HaveOccurred())
	return values
}
