package chart

import (
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The webhooks never intercept the server's own writes: no webhook rule
// covers an operation the chart's RBAC lets the server perform, so the
// server's patches of kube-proxy pods, its Events, reports and leader Lease
// never wait on (or loop through) itself. Leases are in no rule at all: node
// heartbeats and leader election never go through the webhook. A new rule
// that overlaps (pods UPDATE, say) fails here, with the fix to make: a
// matchCondition excluding the server's ServiceAccount.
func TestWebhooksNeverInterceptTheServer(t *testing.T) {
	m := render(t)
	var grants []rbacv1.PolicyRule
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, u := range m.ofKind(kind) {
			if u.GetName() == release+"-metrics-reader" {
				continue // for Prometheus, not bound to the server
			}
			r := &rbacv1.ClusterRole{}
			typed(t, u, r)
			grants = append(grants, r.Rules...)
		}
	}
	operations := map[string][]admissionregistrationv1.OperationType{
		"create": {admissionregistrationv1.Create},
		"update": {admissionregistrationv1.Update}, "patch": {admissionregistrationv1.Update},
		"delete": {admissionregistrationv1.Delete}, "deletecollection": {admissionregistrationv1.Delete},
	}
	match := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	writes := 0
	for _, h := range webhooks(t, m) {
		for _, rule := range h.Rules {
			if match(rule.APIGroups, "coordination.k8s.io") && match(rule.Resources, "leases") {
				t.Errorf("webhook %s intercepts Leases", h.Name)
			}
			for _, g := range grants {
				for _, verb := range g.Verbs {
					for _, op := range operations[verb] {
						writes++
						for _, group := range g.APIGroups {
							for _, res := range g.Resources {
								if match(rule.APIGroups, group) && match(rule.Resources, res) &&
									(slices.Contains(rule.Operations, op) || slices.Contains(rule.Operations, admissionregistrationv1.OperationAll)) {
									t.Errorf("webhook %s intercepts the server's own %s on %s %q: add a matchCondition excluding its ServiceAccount",
										h.Name, verb, group, res)
								}
							}
						}
					}
				}
			}
		}
	}
	if writes == 0 {
		t.Fatal("no write grants found: the test looks at nothing")
	}
}
