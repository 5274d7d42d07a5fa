// Package prefilter checks the webhooks' matchConditions against the rules.
//
// matchConditions (config/webhook, kept equal to the chart by the chart
// tests) restate, in CEL, how the rules recognise the objects they act on:
// hostNetwork or bound pods, kube-apiserver, kube-vip and kube-proxy
// containers, the kubeadm-config ConfigMap. The API server never calls the
// webhook for an object a condition rejects. This test compiles the
// conditions with the API server's own CEL environment and matcher
// (k8s.io/apiserver, as kube-apiserver runs them) and evaluates them on every
// object some rule has a finding for: a rule that learns to recognise
// something the prefilter would hide fails here.
package prefilter_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission"
	admissioncel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/endpoint-policy/endpoint-policy/internal/check"
	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/kinds"
	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/registry"
	"github.com/endpoint-policy/endpoint-policy/internal/testing/fixtures"
)

const repoRoot = "../.."

// hook is one webhook of config/webhook/manifests.yaml as the API server
// sees it.
type hook struct {
	accessor webhook.WebhookAccessor
	effect   policy.Effect
}

func loadHooks(t *testing.T) []hook {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var hooks []hook
	for i, doc := range splitYAML(data) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		switch meta.Kind {
		case "MutatingWebhookConfiguration":
			var c admissionregistrationv1.MutatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				t.Fatal(err)
			}
			for j := range c.Webhooks {
				hooks = append(hooks, hook{webhook.NewMutatingWebhookAccessor(c.Webhooks[j].Name, c.Name, &c.Webhooks[j]), policy.Mutating})
			}
		case "ValidatingWebhookConfiguration":
			var c admissionregistrationv1.ValidatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				t.Fatal(err)
			}
			for j := range c.Webhooks {
				hooks = append(hooks, hook{webhook.NewValidatingWebhookAccessor(c.Webhooks[j].Name, c.Name, &c.Webhooks[j]), policy.Validating})
			}
		}
	}
	if len(hooks) == 0 {
		t.Fatal("no webhook in config/webhook/manifests.yaml")
	}
	return hooks
}

func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	start := 0
	for i := 0; i+4 <= len(data); i++ {
		if (i == 0 || data[i-1] == '\n') && string(data[i:i+4]) == "---\n" {
			docs = append(docs, data[start:i])
			start = i + 4
		}
	}
	return append(docs, data[start:])
}

// serves reports whether h's rules send a CREATE of resource to it.
func serves(h webhook.WebhookAccessor, resource schema.GroupVersionResource) bool {
	for _, r := range h.GetRules() {
		if !contains(r.APIGroups, resource.Group) || !contains(r.APIVersions, resource.Version) || !contains(r.Resources, resource.Resource) {
			continue
		}
		for _, op := range r.Operations {
			if op == admissionregistrationv1.Create || op == admissionregistrationv1.OperationAll {
				return true
			}
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s || v == "*" {
			return true
		}
	}
	return false
}

// positive is an object some rule has findings for.
type positive struct {
	source string
	obj    client.Object
}

// positives evaluates every rule, in Enforce, on the examples and the
// fixtures, and returns each rule's objects with findings.
func positives(t *testing.T) map[policy.ID][]positive {
	t.Helper()
	in, err := check.Read([]string{filepath.Join(repoRoot, "examples")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// kube-proxy-node-deleting needs a node being deleted and a pod bound to
	// it.
	going := &corev1.Node{}
	going.Name = "node-going"
	going.Spec.Taints = []corev1.Taint{{Key: kubeproxy.ToBeDeletedTaint, Value: "1700000000", Effect: corev1.TaintEffectNoSchedule}}
	going.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	extra := map[string]client.Object{
		"node going":                     going,
		"kube-proxy on the node going":   fixtures.KubeProxy("node-going"),
		"cilium-operator pinned":         fixtures.CiliumOperatorPinned(),
		"kube-apiserver mirror pod":      fixtures.APIServerMirrorPod(),
		"kubeadm-config, shared address": fixtures.KubeadmConfig(),
	}
	// control-plane-endpoint needs two or more control-plane nodes, and an
	// object that points at one of them.
	for i := 1; i <= 3; i++ {
		n := &corev1.Node{}
		n.Name = fmt.Sprintf("cpe-%d", i)
		n.Labels = map[string]string{cpendpoint.ControlPlaneLabel: ""}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.99.0.1%d", i)}}
		n.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
		extra["control-plane node "+n.Name] = n
	}
	kubeconfig := "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster: {server: https://10.99.0.11:6443}\n"
	for _, nn := range []types.NamespacedName{
		{Namespace: cpendpoint.ClusterInfoNamespace, Name: cpendpoint.ClusterInfoName},
		{Namespace: cpendpoint.KubeProxyNamespace, Name: cpendpoint.KubeProxyName},
	} {
		cm := &corev1.ConfigMap{Data: map[string]string{cpendpoint.ClusterInfoKey: kubeconfig, cpendpoint.KubeProxyKubeconfigKey: kubeconfig}}
		cm.Namespace, cm.Name = nn.Namespace, nn.Name
		cm.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
		extra["ConfigMap "+nn.String()+" pinned to cpe-1"] = cm
	}
	pinnedEndpoint := fixtures.KubeadmConfig()
	pinnedEndpoint.Data["ClusterConfiguration"] = strings.Replace(pinnedEndpoint.Data["ClusterConfiguration"],
		"controlPlaneEndpoint: cp.example.com:6443", "controlPlaneEndpoint: 10.99.0.12:6443", 1)
	extra["kubeadm-config, controlPlaneEndpoint pinned to cpe-2"] = pinnedEndpoint
	master := fixtures.KubeProxy("node-1")
	master.Spec.Containers[0].Command = append(master.Spec.Containers[0].Command, "--master=https://10.99.0.13")
	extra["kube-proxy with --master pinned to cpe-3"] = master
	for name, obj := range extra {
		in.Objects = append(in.Objects, check.Object{Source: name, Object: obj})
	}
	cfg := config.Default()
	for _, p := range cfg.Policies {
		p.Mode = policy.Enforce
	}
	engine, err := cfg.Engine()
	if err != nil {
		t.Fatal(err)
	}
	out := map[policy.ID][]positive{}
	report := check.Check(in, engine)
	bySource := map[string]client.Object{}
	for _, o := range in.Objects {
		bySource[o.Source] = o.Object
	}
	for _, f := range report.Findings {
		out[f.Policy] = append(out[f.Policy], positive{source: f.Source, obj: bySource[f.Source]})
	}
	return out
}

func TestMatchConditionsLetEveryFindingThrough(t *testing.T) {
	hooks := loadHooks(t)
	compiler := admissioncel.NewConditionCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	found := positives(t)
	for _, d := range registry.Policies {
		t.Run(string(d.ID), func(t *testing.T) {
			cases := found[d.ID]
			if len(cases) == 0 {
				t.Fatalf("no example or fixture has a finding of %s: add one, so that its prefilter is tested", d.ID)
			}
			for _, c := range cases {
				k, ok := kinds.ForGVK(c.obj.GetObjectKind().GroupVersionKind())
				if !ok {
					t.Fatalf("%s: %s is not a kind the policies read", c.source, c.obj.GetObjectKind().GroupVersionKind())
				}
				gvr := schema.GroupVersionResource(k.Resource)
				attr := admission.NewAttributesRecord(c.obj, nil, k.GVK, c.obj.GetNamespace(), c.obj.GetName(), gvr, "",
					admission.Create, nil, false, &user.DefaultInfo{Name: "system:admin"})
				versioned := &admission.VersionedAttributes{Attributes: attr, VersionedKind: k.GVK, VersionedObject: admission.NewLazyObject(c.obj)}
				called := false
				effect := d.Effect
				if _, pod := c.obj.(*corev1.Pod); !pod && effect == policy.Mutating {
					// A mutating policy's finding on a workload is about the
					// pods its template creates (Finding.Template): the
					// workloads' validating webhook warns with it.
					effect = policy.Validating
				}
				for _, h := range hooks {
					if h.effect != effect || !serves(h.accessor, gvr) {
						continue
					}
					res := h.accessor.GetCompiledMatcher(compiler).Match(context.Background(), versioned, nil, nil)
					if res.Error != nil {
						t.Errorf("%s: %s's matchConditions fail: %v", c.source, h.accessor.GetName(), res.Error)
					}
					called = called || res.Matches
				}
				if !called {
					t.Errorf("%s: %s has a finding the API server never sends to a %s webhook (matchConditions or rules filter it out)",
						c.source, d.ID, effect)
				}
			}
		})
	}
}
