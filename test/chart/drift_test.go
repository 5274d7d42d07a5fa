package chart

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/drift"
)

// checkDrift: the server the chart installed (alone, so the leader) compares
// the live webhook configurations with the chart's -webhooks ConfigMap. Right
// after install every field of every webhook reads 0, the API server's
// defaulting included, and the caBundle verifies the serving certificate. An
// AKS-style edit (the Admissions Enforcer's exclusions added to
// mutate-pods' namespaceSelector) reads 1, for that webhook and field only,
// with a Warning Event on the configuration; undoing it reads 0 again, with a
// Normal Event. The server never writes the configuration back.
func (c *cluster) checkDrift(t *testing.T, scrape func() (string, error)) {
	t.Helper()
	g := gomega.NewWithT(t)
	ctx := t.Context()
	hooks := c.caBundles(t)
	const mutatePods = "mutate-pods.endpoint-policy.io"
	expect := func(drifted string) func() error {
		return func() error {
			body, err := scrape()
			if err != nil {
				return err
			}
			for hook := range hooks {
				for _, field := range drift.Fields {
					want := "0"
					if hook == mutatePods && field == drifted {
						want = "1"
					}
					series := fmt.Sprintf("endpoint_policy_webhook_configuration_drift{field=%q,webhook=%q} %s\n", field, hook, want)
					if !strings.Contains(body, series) {
						return fmt.Errorf("no %q in the metrics", strings.TrimSpace(series))
					}
				}
			}
			return nil
		}
	}
	g.Eventually(expect(""), 30*time.Second, 200*time.Millisecond).Should(gomega.Succeed(), "as installed")

	key := client.ObjectKey{Name: release + "-mutating"}
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	c.get(t, key, mutating)
	installed := mutating.Webhooks[0].NamespaceSelector.DeepCopy()
	edited := mutating.DeepCopy()
	edited.Webhooks[0].NamespaceSelector.MatchExpressions = append(edited.Webhooks[0].NamespaceSelector.MatchExpressions,
		metav1.LabelSelectorRequirement{Key: "control-plane", Operator: metav1.LabelSelectorOpDoesNotExist},
		metav1.LabelSelectorRequirement{Key: "kubernetes.azure.com/managedby", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"aks"}})
	g.Expect(c.k8s.Update(ctx, edited)).To(gomega.Succeed())
	t.Cleanup(func() {
		restore := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := c.k8s.Get(context.Background(), key, restore); err == nil {
			restore.Webhooks[0].NamespaceSelector = installed
			_ = c.k8s.Update(context.Background(), restore)
		}
	})
	g.Eventually(expect(drift.FieldNamespaceSelector), 30*time.Second, 200*time.Millisecond).Should(gomega.Succeed(), "after the edit")
	event := func(reason string) func() (string, error) {
		return func() (string, error) {
			list := &eventsv1.EventList{}
			if err := c.k8s.List(ctx, list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
				return "", err
			}
			for _, e := range list.Items {
				if e.Reason == reason && e.Regarding.Kind == "MutatingWebhookConfiguration" && e.Regarding.Name == key.Name {
					return e.Note, nil
				}
			}
			return "", nil
		}
	}
	g.Eventually(event(drift.ReasonDrift), 30*time.Second, 200*time.Millisecond).Should(gomega.And(
		gomega.ContainSubstring("webhook "+mutatePods+": namespaceSelector differs"),
		gomega.ContainSubstring("kubernetes.azure.com/managedby")))
	live := &admissionregistrationv1.MutatingWebhookConfiguration{}
	c.get(t, key, live)
	g.Expect(live.Webhooks[0].NamespaceSelector.MatchExpressions).To(gomega.HaveLen(len(installed.MatchExpressions)+2), "the server wrote the configuration back")

	live.Webhooks[0].NamespaceSelector = installed
	g.Expect(c.k8s.Update(ctx, live)).To(gomega.Succeed())
	g.Eventually(expect(""), 30*time.Second, 200*time.Millisecond).Should(gomega.Succeed(), "after the edit was undone")
	g.Eventually(event(drift.ReasonRestored), 30*time.Second, 200*time.Millisecond).Should(gomega.ContainSubstring("namespaceSelector is as installed again"))
}
