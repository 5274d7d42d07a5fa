package drift

import (
	"encoding/pem"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/endpoint-policy/endpoint-policy/internal/testing/loopback"
)

// installed imitates the chart's -webhooks ConfigMap: fields left to the API
// server's defaults (timeoutSeconds, objectSelector, a rule's scope).
const installed = `
# a comment before the first document
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: ep-mutating
  labels: {admissions.enforcer/disabled: "true"}
webhooks:
  - name: mutate-pods.endpoint-policy.io
    admissionReviewVersions: ["v1"]
    clientConfig:
      service: {name: ep-webhook, namespace: ep, path: /mutate-v1-pod}
      caBundle:
    failurePolicy: Ignore
    sideEffects: None
    namespaceSelector:
      matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [ep]}
    rules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"]}
    matchConditions:
      - {name: host-network, expression: "object.spec.hostNetwork"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: ep-validating
webhooks:
  - name: validate-kubeadm-config.endpoint-policy.io
    admissionReviewVersions: ["v1"]
    clientConfig:
      service: {name: ep-webhook, namespace: ep, path: /validate-kubeadm-config}
    sideEffects: None
    timeoutSeconds: 3
    rules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE", "UPDATE"], resources: ["configmaps"], scope: Namespaced}
`

// live is what the API server returns for installed: defaults applied.
func live(t *testing.T, caBundle []byte) Configuration {
	t.Helper()
	configs, err := Parse("installed", []byte(installed))
	if err != nil {
		t.Fatal(err)
	}
	c := configs[0]
	c.Hooks = append([]Hook(nil), c.Hooks...)
	h := &c.Hooks[0]
	h.ClientConfig.CABundle = caBundle
	return c
}

func TestParse(t *testing.T) {
	configs, err := Parse("installed", []byte(installed))
	if err != nil {
		t.Fatal(err)
	}
	if len(configs) != 2 || configs[0].Kind != "MutatingWebhookConfiguration" || configs[1].Name != "ep-validating" {
		t.Fatalf("parsed %+v", configs)
	}
	m := configs[0].Hooks[0]
	// The API server's defaults, so that an unset field is not drift.
	if *m.TimeoutSeconds != 10 || m.ObjectSelector == nil || *m.Rules[0].Scope != admissionregistrationv1.AllScopes {
		t.Errorf("defaults not applied: timeout %v, objectSelector %v, scope %v", *m.TimeoutSeconds, m.ObjectSelector, *m.Rules[0].Scope)
	}
	if v := configs[1].Hooks[0]; *v.FailurePolicy != admissionregistrationv1.Fail || *v.TimeoutSeconds != 3 {
		t.Errorf("validating: failurePolicy %v, timeout %v", *v.FailurePolicy, *v.TimeoutSeconds)
	}

	for _, tc := range []struct{ name, data, want string }{
		{"empty", "# nothing\n", "f.yaml: no MutatingWebhookConfiguration or ValidatingWebhookConfiguration in it"},
		{"other kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "f.yaml: document 1:"},
		{"unknown field", "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: x}\nwebhook: []\n", `f.yaml: document 1: strict decoding error: unknown field "webhook"`},
		{"second document", installed + "---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {}\n", "f.yaml: document 3: MutatingWebhookConfiguration: metadata.name is empty"},
		{"not YAML", "webhooks: [\n", "f.yaml: document 1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	ca, err := loopback.NewCA("endpoint-policy-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := loopback.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Issue([]string{"ep-webhook.ep.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serving.Certificate[0]})
	wrongName, err := ca.Issue([]string{"other.ep.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongNameCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: wrongName.Certificate[0]})
	configs, err := Parse("installed", []byte(installed))
	if err != nil {
		t.Fatal(err)
	}
	want := configs[0]
	now := time.Now()

	for _, tc := range []struct {
		name   string
		edit   func(c *Configuration) *Configuration
		cert   []byte
		fields []string
		detail string
	}{
		{name: "as installed", edit: func(c *Configuration) *Configuration { return c }, cert: cert},
		{name: "caBundle not checked without a certificate", edit: func(c *Configuration) *Configuration {
			c.Hooks[0].ClientConfig.CABundle = nil
			return c
		}},
		{name: "AKS adds a namespace exclusion", edit: func(c *Configuration) *Configuration {
			ns := c.Hooks[0].NamespaceSelector.DeepCopy()
			ns.MatchExpressions = append(ns.MatchExpressions, metav1.LabelSelectorRequirement{Key: "control-plane", Operator: metav1.LabelSelectorOpDoesNotExist})
			c.Hooks[0].NamespaceSelector = ns
			return c
		}, cert: cert, fields: []string{FieldNamespaceSelector}, detail: `live {"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["ep"]},{"key":"control-plane","operator":"DoesNotExist"}]}`},
		{name: "failurePolicy flipped, timeout shortened", edit: func(c *Configuration) *Configuration {
			c.Hooks[0].FailurePolicy = ptr.To(admissionregistrationv1.Fail)
			c.Hooks[0].TimeoutSeconds = ptr.To[int32](1)
			return c
		}, cert: cert, fields: []string{FieldFailurePolicy, FieldTimeoutSeconds}},
		{name: "object selector, match conditions, rules", edit: func(c *Configuration) *Configuration {
			c.Hooks[0].ObjectSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
			c.Hooks[0].MatchConditions = nil
			c.Hooks[0].Rules = nil
			return c
		}, cert: cert, fields: []string{FieldObjectSelector, FieldMatchConditions, FieldRules}},
		{name: "empty caBundle", edit: func(c *Configuration) *Configuration {
			c.Hooks[0].ClientConfig.CABundle = nil
			return c
		}, cert: cert, fields: []string{FieldCABundle}, detail: "the caBundle is empty"},
		{name: "caBundle of another CA", edit: func(c *Configuration) *Configuration {
			c.Hooks[0].ClientConfig.CABundle = other.PEM
			return c
		}, cert: cert, fields: []string{FieldCABundle}, detail: "does not verify the serving certificate for ep-webhook.ep.svc"},
		{name: "certificate for another name", edit: func(c *Configuration) *Configuration { return c },
			cert: wrongNameCert, fields: []string{FieldCABundle}, detail: "for ep-webhook.ep.svc"},
		{name: "webhook removed", edit: func(c *Configuration) *Configuration {
			c.Hooks = nil
			return c
		}, cert: cert, fields: []string{FieldWebhook}, detail: "the webhook is missing from MutatingWebhookConfiguration/ep-mutating"},
		{name: "configuration deleted", edit: func(*Configuration) *Configuration { return nil },
			cert: cert, fields: []string{FieldWebhook}, detail: "MutatingWebhookConfiguration/ep-mutating is deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := live(t, ca.PEM)
			got := Compare(want, tc.edit(&l), tc.cert, now)
			var fields []string
			for _, f := range got {
				fields = append(fields, f.Field)
				if f.Webhook != "mutate-pods.endpoint-policy.io" || f.Configuration != "MutatingWebhookConfiguration/ep-mutating" {
					t.Errorf("finding names %s in %s", f.Webhook, f.Configuration)
				}
			}
			if strings.Join(fields, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("fields %v, want %v (%+v)", fields, tc.fields, got)
			}
			if tc.detail != "" && (len(got) == 0 || !strings.Contains(got[0].Detail, tc.detail)) {
				t.Errorf("detail %+v, want it to contain %q", got, tc.detail)
			}
		})
	}
}

func TestCut(t *testing.T) {
	long := strings.Repeat("word ", 300)
	got := cut(long)
	if len(got) > 1024 || !strings.HasSuffix(got, "word…") {
		t.Errorf("cut to %d bytes, ending %q", len(got), got[len(got)-10:])
	}
	if cut("short") != "short" {
		t.Error("a short note was cut")
	}
}
