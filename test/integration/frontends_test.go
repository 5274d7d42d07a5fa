package integration

import (
	"context"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

// verdict is what one front-end says one policy does to one object.
type verdict struct {
	Kind, Namespace, Name string
	Policy                policy.ID
	Action                policy.Action
}

// decisions reads every policy's admission decision counters.
func decisions() map[[2]string]float64 {
	out := map[[2]string]float64{}
	for id := range config.Default().Modes() {
		for _, a := range []policy.Action{policy.ActionMutate, policy.ActionDeny, policy.ActionWarn} {
			out[[2]string{string(id), string(a)}] = counter("endpoint_policy_admission_decisions_total",
				map[string]string{"policy": string(id), "action": string(a)})
		}
	}
	return out
}

var _ = Describe("the three front-ends", func() {
	It("give the same verdict for the same object: check CLI, background audit and admission, over the check fixtures", func(ctx context.Context) {
		td := filepath.Join("..", "..", "internal", "check", "testdata")
		cli := expectSameVerdicts(ctx, []string{
			filepath.Join(td, "multi-doc.yaml"), filepath.Join(td, "list.json"), filepath.Join(td, "kubeadm-config.yaml"),
			filepath.Join(td, "shared-address.yaml"), filepath.Join(td, "manifests"), filepath.Join(td, "warn-only.yaml"),
			filepath.Join(td, "clean"),
		})
		// Two workload templates that leave KUBERNETES_SERVICE_HOST unset
		// (kube-vip's DaemonSets) have no host-network-endpoint verdict:
		// their pods get it at admission.
		Expect(cli).To(HaveLen(10))
		Expect(cli).To(SatisfyAll(
			HaveKey(HaveField("Action", policy.ActionMutate)), HaveKey(HaveField("Action", policy.ActionDeny)), HaveKey(HaveField("Action", policy.ActionWarn))),
			"the fixtures cover mutate, deny and warn")
	})
})

// expectSameVerdicts reads the check fixtures at paths, takes check's
// verdicts on them, creates them in the cluster, and expects the same
// verdicts from the background audit's reports and from admission (a dry
// run of each object). It returns check's verdicts.
func expectSameVerdicts(ctx context.Context, paths []string) map[verdict]bool {
	GinkgoHelper()
	in, err := check.Read(paths, nil)
	Expect(err).NotTo(HaveOccurred())
	cfg, err := config.Parse([]byte(configYAML(nil)))
	Expect(err).NotTo(HaveOccurred())
	in.EndpointConfigMaps = cfg.EndpointConfigMapNames()
	engine, err := config.Default().Engine()
	Expect(err).NotTo(HaveOccurred())

	By("the check CLI")
	cli := map[verdict]bool{}
	for _, f := range check.Check(in, engine).Findings {
		cli[verdict{f.Kind, f.Namespace, f.Name, f.Policy, f.Action}] = true
	}
	var objects []client.Object
	fixture := map[[3]string]bool{}
	for _, o := range in.Objects {
		obj := o.Object.DeepCopyObject().(client.Object)
		if p, ok := obj.(*corev1.Pod); ok && policy.IsMirrorPod(p) && p.Spec.NodeName == "" {
			// A static pod read from a manifests directory, as check reads
			// it: its mirror pod, which the API server takes only bound to
			// the kubelet's node.
			p.Spec.NodeName = "cp-static"
		}
		objects = append(objects, obj)
		fixture[[3]string{obj.GetObjectKind().GroupVersionKind().Kind, obj.GetNamespace(), obj.GetName()}] = true
	}
	namespaces := map[string]bool{}
	for _, obj := range objects {
		if ns := obj.GetNamespace(); ns != "" {
			namespaces[ns] = true
		}
	}
	for ns := range namespaces {
		err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err == nil {
			DeferCleanup(func(ctx context.Context) {
				Expect(k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
			})
		} else {
			Expect(apierrors.IsAlreadyExists(err)).To(BeTrue(), "%v", err)
		}
	}
	withoutWebhooks(ctx, func() {
		for _, obj := range objects {
			created := obj.DeepCopyObject().(client.Object)
			Expect(k8s.Create(ctx, created)).To(Succeed())
			DeferCleanup(func(ctx context.Context) {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, obj.DeepCopyObject().(client.Object), client.GracePeriodSeconds(0)))).To(Succeed())
			})
			if n, ok := obj.(*corev1.Node); ok {
				// A Node's addresses are status: written as the kubelet does.
				created.(*corev1.Node).Status = n.Status
				Expect(k8s.Status().Update(ctx, created)).To(Succeed())
			}
		}
	})

	By("the background audit, in the PolicyReports")
	Eventually(func(g Gomega) map[verdict]bool {
		got := map[verdict]bool{}
		for ns := range namespaces {
			r, err := policyReport(ctx, ns)()
			if apierrors.IsNotFound(err) {
				continue
			}
			g.Expect(err).NotTo(HaveOccurred())
			for _, res := range resultsOf(r) {
				if fixture[[3]string{res.Kind, res.Namespace, res.Name}] {
					got[verdict{res.Kind, res.Namespace, res.Name, policy.ID(res.Policy), policy.Action(res.Action)}] = true
				}
			}
		}
		return got
	}).WithTimeout(settle).WithPolling(polling).Should(Equal(cli))

	By("admission, object by object (the objects exist: admission runs before the storage says so)")
	admission := map[verdict]bool{}
	for _, obj := range objects {
		before := decisions()
		err := k8s.Create(ctx, obj.DeepCopyObject().(client.Object), client.DryRunAll)
		Expect(apierrors.IsAlreadyExists(err) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(),
			"%s %s/%s: %v", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetNamespace(), obj.GetName(), err)
		for k, n := range decisions() {
			if n > before[k] {
				admission[verdict{obj.GetObjectKind().GroupVersionKind().Kind, obj.GetNamespace(), obj.GetName(),
					policy.ID(k[0]), policy.Action(k[1])}] = true
			}
		}
	}
	Expect(admission).To(Equal(cli))
	return cli
}
