package cpendpoint_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/cpendpoint"
)

// listing is a cluster view that lists endpoint ConfigMaps (only their
// names matter to the rule: it judges the ConfigMap it is given).
type listing struct {
	cluster
	listed map[string]bool // "namespace/name"
}

func (l listing) ConfigMap(string, string) (*corev1.ConfigMap, policy.Knowledge) {
	return nil, policy.Unknown
}
func (l listing) Listed(namespace, name string) bool { return l.listed[namespace+"/"+name] }

func configMap(namespace, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: data}
}

func TestRuleCNIConfigMaps(t *testing.T) {
	listed := listing{cluster: three, listed: map[string]bool{"kube-system/api-endpoint": true, "kube-system/cilium-config": true}}
	one := cluster{known: true, nodes: three.nodes[:1]}
	tests := []struct {
		name    string
		obj     *corev1.ConfigMap
		cluster policy.Cluster
		// wantField and want: the one finding; "" for none.
		wantField, wantRule, want string
		applies                   bool
	}{
		{name: "cilium-config k8s-api-server-urls: one node's address", cluster: three, applies: true,
			obj:       configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://10.0.0.11:6443"}),
			wantField: "data[k8s-api-server-urls]", wantRule: cpendpoint.RuleCiliumConfig,
			want: "k8s-api-server-urls in ConfigMap kube-system/cilium-config is https://10.0.0.11:6443, the address of control-plane node cp-1 only, one of 3"},
		{name: "cilium-config k8s-api-server-urls: every control-plane node", cluster: three, applies: true,
			obj: configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://10.0.0.11:6443 https://10.0.0.12:6443 https://10.0.0.13:6443"})},
		{name: "cilium-config k8s-api-server-urls: two nodes fail over", cluster: three, applies: true,
			obj: configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://10.0.0.11:6443,https://10.0.0.12:6443"})},
		{name: "cilium-config k8s-api-server-urls: one node twice", cluster: three, applies: true,
			obj:       configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://10.0.0.11:6443 https://[fd00::11]:6443"}),
			wantField: "data[k8s-api-server-urls]", wantRule: cpendpoint.RuleCiliumConfig, want: "control-plane node cp-1 only"},
		{name: "cilium-config k8s-api-server: one node's address", cluster: three, applies: true,
			obj:       configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server": "https://10.0.0.12:6443", "cluster-name": "default"}),
			wantField: "data[k8s-api-server]", wantRule: cpendpoint.RuleCiliumConfig, want: "control-plane node cp-2 only"},
		{name: "cilium-config: a VIP", cluster: three, applies: true,
			obj: configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://10.0.0.100:6443"})},
		{name: "cilium-config: one control-plane node", cluster: one, applies: true,
			obj: configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://10.0.0.11:6443"})},
		{name: "cilium-config: localhost", cluster: three, applies: true,
			obj: configMap("kube-system", "cilium-config", map[string]string{"k8s-api-server-urls": "https://localhost:7443"})},
		{name: "kubernetes-services-endpoint: one node's address", cluster: three, applies: true,
			obj:       configMap("tigera-operator", "kubernetes-services-endpoint", map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.13", "KUBERNETES_SERVICE_PORT": "6443"}),
			wantField: "data[KUBERNETES_SERVICE_HOST]", wantRule: cpendpoint.RuleServicesEndpoint,
			want: "KUBERNETES_SERVICE_HOST in ConfigMap tigera-operator/kubernetes-services-endpoint is 10.0.0.13, the address of control-plane node cp-3 only"},
		{name: "kubernetes-services-endpoint: a DNS name", cluster: three, applies: true,
			obj: configMap("calico-system", "kubernetes-services-endpoint", map[string]string{"KUBERNETES_SERVICE_HOST": "api.example.com"})},
		{name: "a listed ConfigMap (k8sServiceHostRef): one node's address", cluster: listed, applies: true,
			obj:       configMap("kube-system", "api-endpoint", map[string]string{"host": "10.0.0.11", "port": "6443"}),
			wantField: "data[host]", wantRule: cpendpoint.RuleEndpointConfigMap,
			want: `key "host" of ConfigMap kube-system/api-endpoint (endpointConfigMaps) is 10.0.0.11, the address of control-plane node cp-1 only`},
		{name: "a listed ConfigMap: localhost", cluster: listed, applies: true,
			obj: configMap("kube-system", "api-endpoint", map[string]string{"host": "localhost"})},
		{name: "a ConfigMap not listed is not the policy's", cluster: listed,
			obj: configMap("kube-system", "other", map[string]string{"host": "10.0.0.11"})},
		{name: "without a cluster view that lists: not the policy's", cluster: three,
			obj: configMap("kube-system", "api-endpoint", map[string]string{"host": "10.0.0.11"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, applies := cpendpoint.Rule{}.Evaluate(policy.Target{Object: tt.obj, Cluster: tt.cluster})
			if applies != tt.applies {
				t.Fatalf("applies = %v, want %v", applies, tt.applies)
			}
			if tt.want == "" {
				if len(findings) != 0 {
					t.Fatalf("want no finding, got %v", findings)
				}
				return
			}
			if len(findings) != 1 {
				t.Fatalf("want 1 finding, got %v", findings)
			}
			f := findings[0]
			if f.Field.String() != tt.wantField || f.Rule != tt.wantRule || !strings.Contains(f.Message, tt.want) {
				t.Errorf("got %s (rule %s): %s\nwant %s (rule %s) containing %q", f.Field, f.Rule, f.Message, tt.wantField, tt.wantRule, tt.want)
			}
		})
	}
}

// TestRuleCiliumFlags: --k8s-api-server and --k8s-api-server-urls in a
// hostNetwork container are judged like cilium-config's keys.
func TestRuleCiliumFlags(t *testing.T) {
	ds := func(hostNetwork bool, args ...string) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "cilium"},
			Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{HostNetwork: hostNetwork,
				Containers: []corev1.Container{{Name: "cilium-agent", Command: []string{"cilium-agent"}, Args: args}}}}},
		}
	}
	tests := []struct {
		name      string
		obj       *appsv1.DaemonSet
		wantField string
	}{
		{name: "--k8s-api-server=", obj: ds(true, "--config-dir=/tmp/cilium/config-map", "--k8s-api-server=https://10.0.0.11:6443"),
			wantField: "spec.template.spec.containers[0].args[1]"},
		{name: "--k8s-api-server VALUE", obj: ds(true, "--k8s-api-server", "https://10.0.0.12:6443"),
			wantField: "spec.template.spec.containers[0].args[0]"},
		{name: "--k8s-api-server-urls= one node", obj: ds(true, "--k8s-api-server-urls=https://10.0.0.11:6443"),
			wantField: "spec.template.spec.containers[0].args[0]"},
		{name: "--k8s-api-server-urls= every node", obj: ds(true, "--k8s-api-server-urls=https://10.0.0.11:6443,https://10.0.0.12:6443,https://10.0.0.13:6443")},
		{name: "pod network: not read", obj: ds(false, "--k8s-api-server=https://10.0.0.11:6443")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			findings, _ := cpendpoint.Rule{}.Evaluate(policy.Target{Object: tt.obj, Cluster: three})
			if tt.wantField == "" {
				if len(findings) != 0 {
					t.Fatalf("want no finding, got %v", findings)
				}
				return
			}
			if len(findings) != 1 || findings[0].Field.String() != tt.wantField || findings[0].Rule != cpendpoint.RuleCiliumFlag {
				t.Fatalf("want one %s finding at %s, got %v", cpendpoint.RuleCiliumFlag, tt.wantField, findings)
			}
		})
	}
}
